package broker

import (
	"context"
	"errors"
	"net"

	"github.com/redis/go-redis/v9"
)

// How the broker's pub/sub connections are dialed, through one go-redis
// hook (dialHook) that every client of the broker carries. Both of its
// jobs are asked for by the context of the call that dials, so they touch
// the subscriptions only, never the pooled connections.
//
// noRedial: go-redis, after an error on a PubSub, dials again at once and
// resubscribes to every channel it knows in one command; the per-channel
// subscriptions (SubscribeUser, SubscribeSharded) end their session
// instead, and the next one resubscribes in batches.
//
// withTap: the connection is read through a pushConn, which delivers the
// messages of user and topic channels to the session's Handler itself and
// calls its Flush before it waits for the socket.

// noRedial marks the contexts under which dialHook refuses to dial.
type noRedial struct{}

var errNoRedial = errors.New("pub/sub connection lost: the next session resubscribes")

// tapKey is the context key of the pushTap a dial reads through.
type tapKey struct{}

// withTap marks ctx so that a pub/sub connection dialed under it is read
// through a pushConn delivering to tap.
func withTap(ctx context.Context, tap *pushTap) context.Context {
	return context.WithValue(ctx, tapKey{}, tap)
}

// dialHook refuses dials under a noRedial context and wraps the
// connections dialed under a withTap context.
type dialHook struct{}

var _ redis.Hook = dialHook{}

func (dialHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if ctx.Value(noRedial{}) != nil {
			return nil, errNoRedial
		}
		conn, err := next(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if tap, ok := ctx.Value(tapKey{}).(*pushTap); ok {
			return &pushConn{Conn: conn, tap: tap, read: rawReader(conn)}, nil
		}
		return conn, nil
	}
}

func (dialHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (dialHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

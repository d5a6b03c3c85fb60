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
// withFlush: go-redis parses each message from its buffered reader and
// reads the socket again only once the buffer is used up, so a Read of the
// connection is the end of the messages that arrived together, and the
// reader is about to wait: the Handler's Flush runs first, on the
// goroutine that reads and delivers.

// noRedial marks the contexts under which dialHook refuses to dial.
type noRedial struct{}

var errNoRedial = errors.New("pub/sub connection lost: the next session resubscribes")

// flushOnRead is the context key of the function a Read calls first.
type flushOnRead struct{}

// withFlush marks ctx so that a pub/sub connection dialed under it calls
// h's Flush before each read of its socket; ctx itself when h is not a
// Flusher.
func withFlush(ctx context.Context, h Handler) context.Context {
	f, ok := h.(Flusher)
	if !ok {
		return ctx
	}
	return context.WithValue(ctx, flushOnRead{}, f.Flush)
}

// dialHook refuses dials under a noRedial context and wraps the
// connections dialed under a withFlush context.
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
		if f, ok := ctx.Value(flushOnRead{}).(func()); ok {
			return &flushingConn{Conn: conn, flush: f}, nil
		}
		return conn, nil
	}
}

func (dialHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (dialHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// flushingConn calls flush before every Read.
type flushingConn struct {
	net.Conn
	flush func()
}

func (c *flushingConn) Read(p []byte) (int, error) {
	c.flush()
	return c.Conn.Read(p)
}

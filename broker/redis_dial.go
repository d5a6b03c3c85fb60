package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"time"

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
// calls its Flush before it waits for the socket. With go-redis's own
// dialer and no TLS, its dial is made of attempts of connectAttempt each
// (dialAttempts).

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
// connections dialed under a withTap context. attempts: a subscription's
// dial is split into attempts (dialAttempts).
type dialHook struct{ attempts bool }

var _ redis.Hook = dialHook{}

// newDialHook is the hook of a client with these options. Attempts only
// for go-redis's own dialer without TLS, which dials under the context it
// is given (net.Dialer.DialContext): with TLS it calls tls.DialWithDialer,
// which ignores the context and would time out by DialTimeout in every
// attempt, and a dialer of the caller's may do the same.
func newDialHook(tlsConfig *tls.Config, dialer func(context.Context, string, string) (net.Conn, error)) dialHook {
	return dialHook{attempts: tlsConfig == nil && dialer == nil}
}

func (d dialHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if ctx.Value(noRedial{}) != nil {
			return nil, errNoRedial
		}
		tap, ok := ctx.Value(tapKey{}).(*pushTap)
		if !ok {
			return next(ctx, network, addr)
		}
		var conn net.Conn
		var err error
		if d.attempts {
			conn, err = dialAttempts(ctx, next, network, addr, connectAttempt, connectAttempts)
		} else {
			conn, err = next(ctx, network, addr)
		}
		if err != nil {
			return nil, err
		}
		return &pushConn{Conn: conn, tap: tap, read: rawReader(conn)}, nil
	}
}

// A subscription's dial is made of up to connectAttempts attempts of
// connectAttempt each, one after the other, as long as each times out
// (about go-redis's default DialTimeout of 5 s in all).
//
// Why: a SYN lost to a partition is sent again by the kernel 1 s later,
// then 3 s, then 7 s. A dial begun a few seconds before the partition
// healed waits out the gap, or times out and waits a backoff: its node's
// clients got nothing for 2.25 s after the heal in one partition-redis
// run of make fault (up to about 4 s by that schedule). A new attempt
// every second sends a SYN every second.
const (
	connectAttempt  = time.Second
	connectAttempts = 5
)

// dialAttempts dials with next, each attempt bounded by attempt, until one
// succeeds, fails other than by running out of its time, ctx ends, or n
// have timed out. It returns the last attempt's error.
func dialAttempts(ctx context.Context, next redis.DialHook, network, addr string, attempt time.Duration, n int) (net.Conn, error) {
	var err error
	for range n {
		actx, cancel := context.WithTimeout(ctx, attempt)
		var conn net.Conn
		conn, err = next(actx, network, addr)
		timedOut := actx.Err() != nil && ctx.Err() == nil
		cancel() // a dialed conn does not depend on its dial's context
		if err == nil || !timedOut {
			return conn, err
		}
	}
	return nil, err
}

func (dialHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (dialHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

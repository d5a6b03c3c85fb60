package broker

import (
	"context"
	"net"

	"github.com/redis/go-redis/v9"
)

// The Handler's Flush on the subscription's connection: go-redis parses
// each message from its buffered reader and reads the socket again only
// once the buffer is used up, so a Read of the connection is the end of
// the messages that arrived together, and the reader is about to wait.
// flushHook wraps the connections dialed under a withFlush context so that
// their Read calls Flush first, on the goroutine that reads and delivers.

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

// flushHook is a go-redis hook that wraps the connections dialed under a
// withFlush context.
type flushHook struct{}

var _ redis.Hook = flushHook{}

func (flushHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
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

func (flushHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (flushHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
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

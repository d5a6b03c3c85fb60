package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/notify-dev/notify/internal/tcptest"
)

// TestDialAttempts: a subscription's dial tries again when an attempt runs
// out of its time (a SYN lost to a partition), and at once returns any
// other outcome. The dials that succeed reach a real listener.
func TestDialAttempts(t *testing.T) {
	addr := tcptest.Listen(t, func(c net.Conn) { c.Close() })
	const attempt = 50 * time.Millisecond
	var d net.Dialer
	// hang waits the attempt out, as a connect whose SYNs are dropped.
	hang := func(ctx context.Context) (net.Conn, error) { <-ctx.Done(); return nil, ctx.Err() }
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	tests := []struct {
		name      string
		attempt   func(ctx context.Context, i int) (net.Conn, error)
		n         int
		wantCalls int32
		connects  bool
		wantErr   error // when it does not connect
	}{
		{"connects at once", func(ctx context.Context, _ int) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}, 5, 1, true, nil},
		{"two attempts time out, the third connects", func(ctx context.Context, i int) (net.Conn, error) {
			if i < 2 {
				return hang(ctx)
			}
			return d.DialContext(ctx, "tcp", addr)
		}, 5, 3, true, nil},
		{"every attempt times out", func(ctx context.Context, _ int) (net.Conn, error) { return hang(ctx) }, 3, 3, false, context.DeadlineExceeded},
		{"refused: not tried again", func(context.Context, int) (net.Conn, error) { return nil, refused }, 5, 1, false, syscall.ECONNREFUSED},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			next := func(ctx context.Context, _, _ string) (net.Conn, error) {
				return tt.attempt(ctx, int(calls.Add(1)-1))
			}
			conn, err := dialAttempts(context.Background(), next, "tcp", addr, attempt, tt.n)
			if conn != nil {
				conn.Close()
			}
			if got := calls.Load(); got != tt.wantCalls {
				t.Errorf("%d attempts, want %d", got, tt.wantCalls)
			}
			switch {
			case tt.connects && err != nil:
				t.Errorf("dial: %v, want a connection", err)
			case !tt.connects && err == nil:
				t.Error("connected, want an error")
			case !tt.connects && !errors.Is(err, tt.wantErr):
				t.Errorf("dial: %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// TestDialHookAttempts: a subscription's dial is split into attempts only
// with go-redis's own dialer and no TLS; with TLS (tls.DialWithDialer
// ignores the context) or a dialer of the caller's, next gets the caller's
// context as it is. Dials outside a subscription are never split.
func TestDialHookAttempts(t *testing.T) {
	addr := tcptest.Listen(t, func(c net.Conn) { c.Close() })
	var d net.Dialer
	own := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return d.DialContext(ctx, network, addr)
	}
	tests := []struct {
		name   string
		hook   dialHook
		tapped bool
		split  bool // next's context has the attempt's deadline
	}{
		{"go-redis's dialer, no TLS", newDialHook(nil, nil), true, true},
		{"TLS", newDialHook(&tls.Config{}, nil), true, false},
		{"the caller's dialer", newDialHook(nil, own), true, false},
		{"not a subscription", newDialHook(nil, nil), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var split bool
			next := func(ctx context.Context, network, addr string) (net.Conn, error) {
				_, split = ctx.Deadline()
				return d.DialContext(ctx, network, addr)
			}
			ctx := context.Background()
			if tt.tapped {
				ctx = withTap(ctx, &pushTap{})
			}
			conn, err := tt.hook.DialHook(next)(ctx, "tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			conn.Close()
			if split != tt.split {
				t.Errorf("next's context has a deadline: %v, want %v", split, tt.split)
			}
		})
	}
}

// TestDialAttemptsCancelled: a dial whose context ends is not tried again.
func TestDialAttemptsCancelled(t *testing.T) {
	addr := tcptest.Listen(t, func(c net.Conn) { c.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int32
	next := func(actx context.Context, _, _ string) (net.Conn, error) {
		calls.Add(1)
		cancel()
		<-actx.Done()
		return nil, actx.Err()
	}
	if _, err := dialAttempts(ctx, next, "tcp", addr, time.Minute, 5); !errors.Is(err, context.Canceled) {
		t.Errorf("dial: %v, want context.Canceled", err)
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("%d attempts, want 1", got)
	}
}

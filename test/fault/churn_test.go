//go:build linux && fault

package fault

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// churn opens rate connections a second, of random raw users, each living
// 2-8 s (about 5 s: some 500 open at a time at 100/s) and then closed by
// the client with 1000.
type churn struct {
	made, failed, msgs atomic.Int64
	mu                 sync.Mutex
	errs               map[string]int
	stop               func()
}

func (c *cluster) startChurn(rate int) *churn {
	ch := &churn{errs: map[string]int{}}
	ctx, cancel := context.WithCancel(c.w.ctx)
	var wg sync.WaitGroup
	var raw []*user
	for _, u := range c.w.users {
		if !u.resume {
			raw = append(raw, u)
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(time.Second / time.Duration(rate))
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
			u := raw[rand.N(len(raw))]
			life := 2*time.Second + rand.N(6*time.Second)
			wg.Add(1)
			go func() {
				defer wg.Done()
				ch.one(ctx, newClient(c.w, -1, u, kindRaw), life)
			}()
		}
	}()
	ch.stop = func() { cancel(); wg.Wait() }
	return ch
}

func (ch *churn) one(ctx context.Context, cl *client, life time.Duration) {
	_, conn, br, err := cl.dial(ctx)
	if err != nil {
		if ctx.Err() == nil {
			ch.failed.Add(1)
			ch.mu.Lock()
			ch.errs[shortErr(err.Error())]++
			ch.mu.Unlock()
		}
		return
	}
	ch.made.Add(1)
	defer conn.Close()
	end := time.Now().Add(life)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer stop()
	_ = conn.SetReadDeadline(end)
	for {
		if _, _, err := cl.readData(conn, br); err != nil {
			break
		}
		ch.msgs.Add(1)
	}
	// A normal close, answered by the server.
	cl.write(conn, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "")))
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	for {
		if _, _, err := cl.readData(conn, br); err != nil {
			return
		}
	}
}

func (ch *churn) errors() map[string]int {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	out := map[string]int{}
	for k, v := range ch.errs {
		out[k] = v
	}
	return out
}

package handoff

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/notify-dev/notify/broker"
	"github.com/notify-dev/notify/internal/await"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type owners map[string]bool

func (o owners) Owns(user string) bool { return o[user] }

// app is the application's webhook: it answers with the statuses given, in
// order (then 200), and records what it accepted.
type app struct {
	mu       sync.Mutex
	statuses []int
	requests int
	got      []Handed
	badSig   int
}

func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.requests++
	var t int64
	sig := r.Header.Get(SignatureHeader)
	if _, err := fmtSscanf(sig, &t); err != nil || sig != Sign("secret", time.Unix(t, 0), body) {
		a.badSig++
	}
	if len(a.statuses) > 0 {
		code := a.statuses[0]
		a.statuses = a.statuses[1:]
		if code != 200 {
			w.WriteHeader(code)
			return
		}
	}
	var b Body
	_ = json.Unmarshal(body, &b)
	a.got = append(a.got, b.Messages...)
}

func (a *app) accepted() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.got)
}

func start(t *testing.T, a *app, own owners, grace time.Duration) (*Handoff, *broker.Memory) {
	t.Helper()
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	b := broker.NewMemory(nil, broker.HistoryConfig{Size: 10, TTL: time.Minute})
	h, err := New(Config{Webhook: srv.URL, Secret: "secret", Grace: grace, NodeName: "n1", Owners: own, Broker: b})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = h.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; h.cfg.Client.CloseIdleConnections() })
	return h, b
}

func msg(seq uint64, payload string) broker.Message {
	return broker.Message{Payload: payload, Cursor: broker.Cursor{Epoch: "e", Seq: seq}}
}

func TestHandoffDecides(t *testing.T) {
	a := &app{}
	h, b := start(t, a, owners{"mine": true, "back": true}, 100*time.Millisecond)
	h.Delivered("mine", msg(1, "to the app"), 0)
	h.Delivered("mine", msg(2, "\xff"), 0)       // bytes: payload_base64
	h.Delivered("theirs", msg(1, "not ours"), 0) // another node owns it
	h.Delivered("back", msg(1, "resumed"), 0)    // the user resumes in time
	h.Received(context.Background(), "back", msg(1, "").Cursor)
	h.Delivered("elsewhere", msg(1, "live"), 1) // delivered on a non-owner: recorded
	await.True(t, "two hand-offs", func() bool { return a.accepted() == 2 })
	ok, err := b.Claim(context.Background(), "elsewhere", msg(1, "").Cursor, time.Minute)
	if err != nil || ok {
		t.Fatalf("the non-owner's live delivery was not recorded (claim %v %v)", ok, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.got[0].UserID != "mine" || a.got[0].Payload != "to the app" || a.got[0].Cursor != "e:1" ||
		a.got[1].PayloadBase64 != "/w==" || a.got[1].Payload != "" || a.badSig != 0 {
		t.Fatalf("webhook got %+v (bad signatures %d)", a.got, a.badSig)
	}
}

func TestSenderRetries(t *testing.T) {
	tests := []struct {
		name     string
		statuses []int
		sent     bool
		requests int
	}{
		{"5xx then ok", []int{500, 503}, true, 3},
		{"429 then ok", []int{429}, true, 2},
		{"4xx: refused, no retry", []int{400}, false, 1},
		{"always failing", []int{500, 500, 500, 500, 500, 500, 500}, false, maxAttempts},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &app{statuses: tt.statuses}
			h, _ := start(t, a, owners{"u": true}, 50*time.Millisecond)
			var n atomic.Int32
			h.Delivered("u", msg(1, "x"), 0)
			await.Within(t, 30*time.Second, "the batch ends", func() bool {
				a.mu.Lock()
				defer a.mu.Unlock()
				n.Store(int32(a.requests))
				return a.requests >= tt.requests && (len(a.got) > 0 || !tt.sent)
			})
			if got := int(n.Load()); got != tt.requests {
				t.Fatalf("%d requests, want %d", got, tt.requests)
			}
			if (a.accepted() == 1) != tt.sent {
				t.Fatalf("accepted %d", a.accepted())
			}
		})
	}
}

func TestQueueBounded(t *testing.T) {
	a := &app{}
	h, _ := start(t, a, owners{"u": true}, time.Hour)
	h.cfg.Queue = 3
	for i := range 5 {
		h.Delivered("u", msg(uint64(i+1), "x"), 0)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.waiting) != 3 || h.waiting[0].msg.Cursor.Seq != 3 {
		t.Fatalf("waiting %d from seq %d, want the newest 3", len(h.waiting), h.waiting[0].msg.Cursor.Seq)
	}
}

// fmtSscanf reads t=<unix> from a signature header.
func fmtSscanf(sig string, t *int64) (int, error) { return fmt.Sscanf(sig, "t=%d,", t) }

// TestStopHandsOffWhatWaits: a node that stops (a deploy restarts each in
// turn) hands off at once what is still in its grace rather than lose it.
func TestStopHandsOffWhatWaits(t *testing.T) {
	a := &app{}
	srv := httptest.NewServer(a)
	defer srv.Close()
	b := broker.NewMemory(nil, broker.HistoryConfig{Size: 10, TTL: time.Minute})
	h, err := New(Config{Webhook: srv.URL, Secret: "secret", Grace: time.Hour, Owners: owners{"u": true}, Broker: b})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = h.Run(ctx) }()
	h.Delivered("u", msg(1, "x"), 0)
	cancel()
	<-done
	h.cfg.Client.CloseIdleConnections()
	if a.accepted() != 1 {
		t.Fatalf("handed off %d at stop, want 1", a.accepted())
	}
}

package node

import (
	"crypto/hmac"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/notify-dev/notify/internal/await"
	"github.com/notify-dev/notify/internal/redistest"
	"github.com/notify-dev/notify/node/internal/handoff"
	"github.com/notify-dev/notify/ring"
)

const webhookSecret = "webhook-test-secret"

// webhook is a real HTTP server standing for the application: it checks
// each request's signature and records the messages.
type webhook struct {
	t   *testing.T
	srv *httptest.Server
	mu  sync.Mutex
	got []handoff.Handed
	bad int // requests with a wrong signature
}

func startWebhook(t *testing.T) *webhook {
	w := &webhook{t: t}
	w.srv = httptest.NewServer(http.HandlerFunc(w.serve))
	t.Cleanup(w.srv.Close)
	return w
}

func (w *webhook) serve(rw http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	sig := r.Header.Get(handoff.SignatureHeader)
	ts, _, _ := strings.Cut(strings.TrimPrefix(sig, "t="), ",")
	sec, _ := strconv.ParseInt(ts, 10, 64)
	want := handoff.Sign(webhookSecret, time.Unix(sec, 0), body)
	var b handoff.Body
	w.mu.Lock()
	defer w.mu.Unlock()
	if !hmac.Equal([]byte(sig), []byte(want)) || json.Unmarshal(body, &b) != nil {
		w.bad++
		rw.WriteHeader(http.StatusUnauthorized)
		return
	}
	w.got = append(w.got, b.Messages...)
}

// of returns the messages handed off for user.
func (w *webhook) of(user string) []handoff.Handed {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []handoff.Handed
	for _, h := range w.got {
		if h.UserID == user {
			out = append(out, h)
		}
	}
	return out
}

func withWebhook(w *webhook, grace time.Duration) func(*Config) {
	return func(c *Config) {
		c.Handoff = HandoffConfig{Webhook: w.srv.URL, Grace: grace, Secret: webhookSecret}
	}
}

// TestHandoff: a message for a user with no connection is handed to the
// webhook once the grace has passed, exactly once; not for a user who was
// connected, nor for one who resumed within the grace.
func TestHandoff(t *testing.T) {
	for _, rs := range []*redistest.Server{nil, redistest.Start(t)} {
		w := startWebhook(t)
		const grace = 300 * time.Millisecond
		tn := historyNode(t, rs, withWebhook(w, grace))
		online := tn.dial(token(t, "on", nil, time.Hour), "")
		online.handshake("on")
		tokBack := token(t, "back", nil, time.Hour)
		before := tn.apiPublish("back", "seen") // the client's last cursor
		offline := tn.apiPublish("off", "for the app")
		tn.apiPublish("on", "delivered live")
		tn.apiPublish("back", "missed")
		c := tn.dial(tokBack, "since="+before) // resumes within the grace
		c.handshake("back")
		await.True(t, "the hand-off of the offline user's message", func() bool { return len(w.of("off")) > 0 })
		// Well past the grace: nothing more, nothing twice.
		time.Sleep(3 * grace)
		if got := w.of("off"); len(got) != 1 || got[0].Cursor != offline || got[0].Payload != "for the app" {
			t.Fatalf("handed off %+v, want the one message with cursor %s", got, offline)
		}
		for _, u := range []string{"on", "back"} {
			if got := w.of(u); len(got) > 0 {
				t.Fatalf("handed off %+v for %s, who got it", got, u)
			}
		}
		if w.bad > 0 {
			t.Fatalf("%d webhook requests with a bad signature", w.bad)
		}
		if got := tn.metric("notify_handoffs_total", "result", "sent"); got != 1 {
			t.Fatalf("handoffs sent %v", got)
		}
	}
}

// TestHandoffOnceAcrossNodes: two nodes that both believe they own the
// user (their ring settings differ, so each sees a ring of one) both track
// the message; the broker's claim lets exactly one hand it off. And a
// message whose owner changes during the grace is handed off once.
func TestHandoffOnceAcrossNodes(t *testing.T) {
	rs := redistest.Start(t)
	w := startWebhook(t)
	const grace = 500 * time.Millisecond
	nodes := startCluster(t, rs, 1, func(_ int, c *Config) {
		c.History.TTL = time.Minute
		withWebhook(w, grace)(c)
	})
	startClusterNode(t, rs, "odd", nodes, func(c *Config) {
		c.Ring = ring.Config{Partitions: 1021, ReplicationFactor: 40, Load: 1.25}
		withWebhook(w, grace)(c)
	})
	eventually(t, "odd is a member", func() bool { return len(nodes[0].cluster.Members()) == 2 })
	for i := range 20 {
		nodes[0].apiPublish("u-"+strconv.Itoa(i), "x")
	}
	// A third node joins during the grace: some users move to it.
	startClusterNode(t, rs, "late", nodes, withWebhook(w, grace))
	await.True(t, "20 hand-offs", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.got) >= 20
	})
	time.Sleep(3 * grace)
	w.mu.Lock()
	defer w.mu.Unlock()
	var users []string
	for _, h := range w.got {
		users = append(users, h.UserID)
	}
	slices.Sort(users)
	if len(users) != 20 || len(slices.Compact(slices.Clone(users))) != 20 {
		t.Fatalf("handed off %v, want each of the 20 users once", users)
	}
}

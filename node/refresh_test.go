package node

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/notify-dev/notify/auth"
	"github.com/notify-dev/notify/transport"
)

// expFrame is a frame of kind refreshed, expiring or error.
type expFrame struct {
	Kind  string `json:"kind"`
	Exp   int64  `json:"exp"`
	Error *struct {
		Message string `json:"message"`
	} `json:"error"`
}

func (c *wsClient) writeText(s string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *wsClient) readExp(kind string) expFrame {
	c.t.Helper()
	s := c.readString()
	var f expFrame
	if err := json.Unmarshal([]byte(s), &f); err != nil || f.Kind != kind {
		c.t.Fatalf("got %s, want a %s frame", s, kind)
	}
	return f
}

func expiredToken(t *testing.T, user string) string {
	t.Helper()
	tok, err := auth.Sign(auth.Config{Secret: testSecret}, user, nil, time.Hour, time.Now().Add(-2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func refreshFrame(tok string) string {
	b, _ := json.Marshal(map[string]string{"kind": "refresh", "token": tok})
	return string(b)
}

// TestRefreshMovesTheExpiry: the client is told before its token expires,
// refreshes in-band, outlives the old expiry, is told again, and is closed
// with 4001 at the new one.
func TestRefreshMovesTheExpiry(t *testing.T) {
	tn := startNode(t, nil, func(c *Config) { c.Tokens.RefreshNotice = 1500 * time.Millisecond })
	c := tn.dial(token(t, "r1", nil, 2*time.Second), "")
	c.handshake("r1")
	first := c.readExp("expiring")
	if left := time.Until(time.Unix(first.Exp, 0)); left <= 0 || left > 2*time.Second {
		t.Fatalf("expiring exp %d is %v away", first.Exp, left)
	}
	// Ignored: frames that are not refreshes.
	c.writeText("hello")
	c.writeText(`{"kind":"other","token":"x"}`)
	c.writeText(refreshFrame(token(t, "r1", nil, 4*time.Second)))
	got := c.readExp("refreshed")
	if got.Exp <= first.Exp {
		t.Fatalf("refreshed exp %d, not after %d", got.Exp, first.Exp)
	}
	// Past the old expiry, the connection still takes messages.
	for time.Now().Before(time.Unix(first.Exp, 0).Add(300 * time.Millisecond)) {
		tn.publish("notify:r1", "ping")
		if s := c.readString(); s != "ping" {
			t.Fatalf("got %q", s)
		}
	}
	if again := c.readExp("expiring"); again.Exp != got.Exp {
		t.Fatalf("second notice for %d, want %d", again.Exp, got.Exp)
	}
	c.expectClose(transport.CloseTokenExpired)
	if time.Now().Before(time.Unix(got.Exp, 0)) {
		t.Fatal("closed before the refreshed expiry")
	}
}

// TestRefreshRefused: a bad token or a malformed refresh is answered with an
// error frame and changes nothing; a token for another user closes the
// connection with 4003.
func TestRefreshRefused(t *testing.T) {
	tn := startNode(t, nil, nil)
	c := tn.dial(token(t, "r2", nil, time.Hour), "")
	c.handshake("r2")
	for _, bad := range []string{refreshFrame("junk"), `{"kind":"refresh"}`, `{"kind":"refresh","token":7}`, refreshFrame(expiredToken(t, "r2"))} {
		c.writeText(bad)
		if f := c.readExp("error"); f.Error == nil || f.Error.Message == "" {
			t.Fatalf("%s: error frame without a message", bad)
		}
	}
	tn.publish("notify:r2", "still here")
	if s := c.readString(); s != "still here" {
		t.Fatalf("got %q", s)
	}
	c.writeText(refreshFrame(token(t, "someone-else", nil, time.Hour)))
	c.expectClose(transport.CloseDisconnected)
	if got := tn.metric("notify_token_refreshes_total", "result", "other_user"); got != 1 {
		t.Fatalf("other_user refreshes %v", got)
	}
	if got := tn.metric("notify_token_refreshes_total", "result", "invalid"); got != 2 {
		t.Fatalf("invalid refreshes %v", got) // the two malformed frames never reach the verifier
	}
}

// TestExpireConnectionsOff: NOTIFY_EXPIRE_CONNECTIONS=false checks the
// token at connect only, as the older services did.
func TestExpireConnectionsOff(t *testing.T) {
	tn := startNode(t, nil, func(c *Config) { c.Tokens.ExpireConnections = false })
	c := tn.dial(token(t, "r3", nil, time.Second), "")
	c.handshake("r3")
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		tn.publish("notify:r3", "on")
		if s := c.readString(); s != "on" {
			t.Fatalf("got %q", s)
		}
	}
}

// TestPhoenixRefresh: the event refresh on a joined topic answers ok with
// exp, an error for a bad token, and closes the socket with 4003 for
// another user's.
func TestPhoenixRefresh(t *testing.T) {
	tn := startPhoenixNode(t, nil)
	c := tn.phoenix(token(t, "p1", nil, time.Minute), "2.0.0", nil)
	c.expectReply(c.send("1", "user:p1", "phx_join", map[string]any{}), "ok")
	m := c.expectReply(c.send("1", "user:p1", "refresh", map[string]string{"token": token(t, "p1", nil, time.Hour)}), "ok")
	if exp, _ := m.ResponseValue["exp"].(float64); time.Until(time.Unix(int64(exp), 0)) < 50*time.Minute {
		t.Fatalf("refresh reply %s", m.Response)
	}
	m = c.expectReply(c.send("1", "user:p1", "refresh", map[string]string{"token": "junk"}), "error")
	if m.ResponseValue["reason"] == "" {
		t.Fatalf("error reply %s", m.Response)
	}
	c.send("1", "user:p1", "refresh", map[string]string{"token": token(t, "p2", nil, time.Hour)})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, _, err := c.conn.Read(ctx); websocket.CloseStatus(err) != transport.CloseDisconnected {
		t.Fatalf("after another user's token: %v, want 4003", err)
	}
}

// TestPhoenixExpiring: an expiring push on every joined topic ahead of the
// token's expiry.
func TestPhoenixExpiring(t *testing.T) {
	tn := startAPINode(t, nil, func(c *Config) { c.Tokens.RefreshNotice = 1500 * time.Millisecond })
	c := tn.phoenix(token(t, "p3", nil, 3*time.Second), "2.0.0", nil) // the notice comes after the join
	c.expectReply(c.send("1", "user:p3", "phx_join", map[string]any{}), "ok")
	if m := c.read(); m.Event != "expiring" || m.Topic != "user:p3" {
		t.Fatalf("got %+v (%s)", m, m.Payload)
	}
}

// TestLongPollRefresh: a long-poll session refreshed in-band goes on
// polling with its first token after that token expired; one that was not
// refreshed ends.
func TestLongPollRefresh(t *testing.T) {
	tn := startPhoenixNode(t, nil)
	for _, refresh := range []bool{true, false} {
		l := tn.longPoll("lr1")
		l.token = token(t, "lr1", nil, 2*time.Second)
		l.open()
		l.post(`["1","1","user:lr1","phx_join",{}]`)
		l.poll(1) // the join reply
		if refresh {
			l.post(`["1","2","user:lr1","refresh",{"token":"` + token(t, "lr1", nil, time.Hour) + `"}]`)
			if got := l.poll(1); !strings.Contains(got[0], `"status":"ok"`) || !strings.Contains(got[0], `"exp":`) {
				t.Fatalf("refresh reply %v", got)
			}
		}
		exp := time.Now().Add(2 * time.Second)
		for time.Now().Before(exp) {
			l.do(http.MethodGet, l.sess, "")
		}
		r := l.do(http.MethodGet, l.sess, "")
		if refresh && r["status"] != float64(204) && r["status"] != float64(200) {
			t.Fatalf("refreshed session after the first token's expiry: %v", r)
		}
		if !refresh && r["status"] != float64(403) {
			t.Fatalf("session without refresh after expiry: %v, want 403", r)
		}
	}
}

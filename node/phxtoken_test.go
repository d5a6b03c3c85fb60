package node

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/notify-dev/notify/auth/phxtoken"
)

const testKeyBase = "a-secret-key-base-of-the-elixir-service-at-least-20-bytes"

// phoenixToken signs user as Phoenix.Token.sign(key_base, "pubsub", user)
// does, signed at signed (auth/phxtoken pins the format against Erlang).
func phoenixToken(t *testing.T, user string, signed time.Time) string {
	t.Helper()
	v, err := phxtoken.New(phxtoken.Config{SecretKeyBase: testKeyBase})
	if err != nil {
		t.Fatal(err)
	}
	return v.Sign(user, signed)
}

// TestPhoenixToken: /pubsub/websocket and /pubsub/longpoll take the Elixir
// service's Phoenix.Tokens next to JWTs; /notify/ws does not; a bad one is
// refused with 401 and a clear message.
func TestPhoenixToken(t *testing.T) {
	tn := startPhoenixNode(t, nil, func(c *Config) { c.Tokens.PhoenixSecretKeyBase = testKeyBase })
	tok := phoenixToken(t, "elixir-42", time.Now())
	c := tn.phoenix(tok, "2.0.0", nil)
	c.expectReply(c.send("1", "user:elixir-42", "phx_join", map[string]any{}), "ok")
	jwt := tn.phoenix(token(t, "jwt-1", nil, time.Hour), "2.0.0", nil)
	jwt.expectReply(jwt.send("1", "user:jwt-1", "phx_join", map[string]any{}), "ok")

	l := tn.longPoll("elixir-42")
	l.token = tok
	l.open()
	l.post(`["1","1","user:elixir-42","phx_join",{}]`)
	if got := l.poll(1); !strings.Contains(got[0], `"status":"ok"`) {
		t.Fatalf("long-poll join %v", got)
	}
	if _, err := tn.tryDial(tok, "", nil); err == nil {
		t.Fatal("/notify/ws took a Phoenix.Token")
	}
	for name, bad := range map[string]string{
		"expired":         phoenixToken(t, "elixir-42", time.Now().Add(-25*time.Hour)),
		"bad signature":   tok[:len(tok)-2] + "AA",
		"truncated":       tok[:len(tok)/2],
		"not base64 tail": tok + "!",
	} {
		_, resp, err := websocket.Dial(t.Context(), "ws://"+tn.Addr()+"/pubsub/websocket?vsn=2.0.0&token="+url.QueryEscape(bad), nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: %v, want 401", name, err)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), "phoenix token") {
			t.Errorf("%s: body %q does not say why", name, b)
		}
	}
}

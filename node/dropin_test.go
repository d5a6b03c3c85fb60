package node

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/notify-dev/notify/api/notificationspb"
)

// TestAPIAuthOff: NOTIFY_API_AUTH=off serves the API without a key, as the
// older services did; any Authorization is ignored, and /readyz says so.
func TestAPIAuthOff(t *testing.T) {
	tn := startNode(t, nil, func(c *Config) {
		c.APIAuth = "off"
		c.GRPCPort = "127.0.0.1:0"
	})
	c := tn.dial(token(t, "open1", []string{"lobby"}, time.Hour), "topic=lobby")
	c.handshake("open1")
	el := notificationspb.NewNotificationsServiceClient(tn.grpcConn())
	for _, ctx := range []struct {
		name string
		md   metadata.MD
	}{{"no metadata", nil}, {"a wrong key", metadata.Pairs("authorization", "Bearer wrong")}} {
		cx := metadata.NewOutgoingContext(t.Context(), ctx.md)
		if _, err := el.BroadcastTextMessage(cx, &notificationspb.BroadcastTextMessageRequest{Topics: []string{"user:open1"}, Message: ctx.name}); err != nil {
			t.Fatalf("%s: %v", ctx.name, err)
		}
		if s := c.readString(); s != ctx.name {
			t.Fatalf("got %q", s)
		}
	}
	if code, out := tn.twirpJSON("Publish", "", `{"user_ids":["open1"],"text":"twirp"}`); code != 200 {
		t.Fatalf("Twirp Publish without a key: %d %v", code, out)
	}
	if s := c.readString(); s != "twirp" {
		t.Fatalf("got %q", s)
	}
	code, body := tn.get("/readyz")
	var r readiness
	if err := json.Unmarshal([]byte(body), &r); err != nil || code != 200 || len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "NOTIFY_API_AUTH=off") {
		t.Fatalf("/readyz %d %s", code, body)
	}
}

// TestAPIAuthOnByDefault: without the setting, a key is still required and
// /readyz has no warning.
func TestAPIAuthOnByDefault(t *testing.T) {
	tn := startAPINode(t, nil, nil)
	el := notificationspb.NewNotificationsServiceClient(tn.grpcConn())
	if _, err := el.BroadcastTextMessage(t.Context(), &notificationspb.BroadcastTextMessageRequest{Topics: []string{"user:x"}, Message: "x"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("without a key: %v", err)
	}
	if _, body := tn.get("/readyz"); strings.Contains(body, "warnings") {
		t.Fatalf("/readyz %s", body)
	}
	bad := DefaultConfig()
	bad.APIAuth = "no"
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "NOTIFY_API_AUTH") {
		t.Fatalf("Validate: %v", err)
	}
}

// TestLegacyHealthz: GET /api/healthz answers OK, the Elixir service's
// probe path.
func TestLegacyHealthz(t *testing.T) {
	tn := startNode(t, nil, nil)
	resp, err := http.Get(tn.url("/api/healthz"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "OK" {
		t.Fatalf("/api/healthz %d %q", resp.StatusCode, b)
	}
}

// TestTwirpAuthReadsTheSessionCookie: Auth takes the session cookie, which
// wins over the authorization field, as go-bridget/notify's did.
func TestTwirpAuthReadsTheSessionCookie(t *testing.T) {
	tn := startAPINode(t, nil, func(c *Config) { c.Auth.SessionCookie = "session" })
	tests := []struct {
		name, cookie, field, want string
		code                      int
	}{
		{name: "cookie alone", cookie: token(t, "cookie-user", nil, time.Hour), want: "cookie-user", code: 200},
		{name: "cookie wins", cookie: token(t, "cookie-user", nil, time.Hour), field: token(t, "field-user", nil, time.Hour), want: "cookie-user", code: 200},
		{name: "field without cookie", field: token(t, "field-user", nil, time.Hour), want: "field-user", code: 200},
		{name: "bad cookie", cookie: "junk", field: token(t, "field-user", nil, time.Hour), code: 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, tn.url("/twirp/notify.NotifyService/Auth"), strings.NewReader(`{"authorization":"`+tt.field+`"}`))
			req.Header.Set("Content-Type", "application/json")
			if tt.cookie != "" {
				req.AddCookie(&http.Cookie{Name: "session", Value: tt.cookie})
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var out map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&out)
			if resp.StatusCode != tt.code || (tt.want != "" && out["userID"] != tt.want) {
				t.Fatalf("%d %v", resp.StatusCode, out)
			}
		})
	}
}

package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/twitchtv/twirp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/notify-dev/notify/api/notificationspb"
	"github.com/notify-dev/notify/api/notifypb"
	"github.com/notify-dev/notify/internal/redistest"
	"github.com/notify-dev/notify/transport"
)

const testAPIKey = "api-test-key"

func startAPINode(t *testing.T, rs *redistest.Server, mutate func(*Config)) *testNode {
	t.Helper()
	return startNode(t, rs, func(c *Config) {
		c.APIKey = testAPIKey
		c.GRPCPort = "127.0.0.1:0"
		if mutate != nil {
			mutate(c)
		}
	})
}

// twirpJSON posts body to a Twirp method and returns the status and the
// decoded JSON object.
func (tn *testNode) twirpJSON(method, key, body string) (int, map[string]any) {
	tn.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, tn.url("/twirp/notify.NotifyService/"+method), strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tn.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		tn.t.Fatalf("%s: response %q is not JSON", method, b)
	}
	if bytes.Contains(b, []byte("goroutine ")) || bytes.Contains(b, []byte(".go:")) {
		tn.t.Fatalf("%s: response carries a stack trace: %s", method, b)
	}
	return resp.StatusCode, out
}

func (tn *testNode) protoClient() notifypb.NotifyService {
	return notifypb.NewNotifyServiceProtobufClient("http://"+tn.Addr(), http.DefaultClient)
}

func withKey(t *testing.T, key string) context.Context {
	ctx, err := twirp.WithHTTPRequestHeaders(t.Context(), http.Header{"Authorization": {"Bearer " + key}})
	if err != nil {
		t.Fatal(err)
	}
	return ctx
}

func (tn *testNode) grpcConn() *grpc.ClientConn {
	tn.t.Helper()
	cc, err := grpc.NewClient(tn.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tn.t.Fatal(err)
	}
	tn.t.Cleanup(func() { cc.Close() })
	return cc
}

func grpcKey(t *testing.T, key string) context.Context {
	return metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+key)
}

// TestTwirpJSONWireFormat pins the JSON of the older service's Auth and of
// Publish, through plain net/http.
func TestTwirpJSONWireFormat(t *testing.T) {
	tn := startAPINode(t, nil, nil)
	tok := token(t, "42", nil, time.Hour)
	for _, auth := range []string{tok, "Bearer " + tok} {
		code, out := tn.twirpJSON("Auth", "", `{"authorization": "`+auth+`"}`)
		if code != 200 || len(out) != 1 || out["userID"] != "42" {
			t.Fatalf("Auth: %d %v, want 200 {\"userID\":\"42\"}", code, out)
		}
	}
	code, out := tn.twirpJSON("Auth", "", `{"authorization": "garbage"}`)
	if code != 401 || out["code"] != "unauthenticated" {
		t.Fatalf("Auth with a bad token: %d %v", code, out)
	}

	c := tn.dial(tok, "")
	c.handshake("42")
	code, out = tn.twirpJSON("Publish", testAPIKey, `{"user_ids": ["42"], "text": "{\"n\":1}"}`)
	if code != 200 || out["targets"] != float64(1) {
		t.Fatalf("Publish: %d %v", code, out)
	}
	if s := c.readString(); s != `{"n":1}` {
		t.Fatalf("got %q", s)
	}
	// bytes travel base64 in JSON, as protojson defines.
	code, _ = tn.twirpJSON("Publish", testAPIKey, `{"user_ids": ["42"], "payload": "/wAB"}`)
	if typ, s := c.read(); code != 200 || typ != 2 || s != "\xff\x00\x01" {
		t.Fatalf("Publish bytes: %d, got %v %q", code, typ, s)
	}
}

func TestTwirpErrors(t *testing.T) {
	tn := startAPINode(t, nil, func(c *Config) { c.MaxPublishSize = 10 })
	noKey := startNode(t, nil, nil) // NOTIFY_API_KEY unset
	tests := []struct {
		name, method, key, body string
		node                    *testNode
		status                  int
		code                    string
		msgHas                  string
	}{
		{"malformed body", "Publish", testAPIKey, `{"user_ids": [`, tn, 400, "malformed", ""},
		{"no target", "Publish", testAPIKey, `{"text": "x"}`, tn, 400, "invalid_argument", "target"},
		{"blank user id", "Publish", testAPIKey, `{"user_ids": [" "], "text": "x"}`, tn, 400, "invalid_argument", "blank"},
		{"empty topic", "Publish", testAPIKey, `{"topics": [""], "text": "x"}`, tn, 400, "invalid_argument", "blank"},
		{"payload too big", "Publish", testAPIKey, `{"user_ids": ["a"], "text": "01234567890"}`, tn, 400, "invalid_argument", "NOTIFY_MAX_PUBLISH_SIZE"},
		{"payload and text", "Publish", testAPIKey, `{"user_ids": ["a"], "text": "x", "payload": "eA=="}`, tn, 400, "invalid_argument", "not both"},
		{"no key", "Publish", "", `{"user_ids": ["a"], "text": "x"}`, tn, 401, "unauthenticated", "Authorization"},
		{"wrong key", "Publish", "nope", `{"user_ids": ["a"], "text": "x"}`, tn, 401, "unauthenticated", "wrong"},
		{"key not configured", "Publish", "anything", `{"user_ids": ["a"], "text": "x"}`, noKey, 401, "unauthenticated", "set NOTIFY_API_KEY"},
		{"delete nothing", "DeleteState", testAPIKey, `{"user_id": "a"}`, tn, 400, "invalid_argument", "all"},
		{"state without user", "GetState", testAPIKey, `{}`, tn, 400, "invalid_argument", "user_id"},
		{"unknown method", "Frobnicate", testAPIKey, `{}`, tn, 404, "bad_route", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, out := tt.node.twirpJSON(tt.method, tt.key, tt.body)
			if status != tt.status || out["code"] != tt.code {
				t.Fatalf("got %d %v, want %d %s", status, out, tt.status, tt.code)
			}
			if msg, _ := out["msg"].(string); !strings.Contains(msg, tt.msgHas) {
				t.Fatalf("message %q does not mention %q", msg, tt.msgHas)
			}
		})
	}
	// 1,001 targets.
	ids := make([]string, 1001)
	for i := range ids {
		ids[i] = "u"
	}
	b, _ := json.Marshal(map[string]any{"user_ids": ids, "text": "x"})
	if status, out := tn.twirpJSON("Publish", testAPIKey, string(b)); status != 400 || out["code"] != "invalid_argument" {
		t.Fatalf("1001 targets: %d %v", status, out)
	}
	if got := tn.metric("notify_api_requests_total", "method", "Publish", "code", "invalid_argument"); got < 6 {
		t.Fatalf("invalid_argument calls counted: %v", got)
	}
}

// TestProtobufAndRedisEndToEnd drives every method through the generated
// protobuf client against a node on a real redis-server.
func TestProtobufAndRedisEndToEnd(t *testing.T) {
	rs := redistest.Start(t)
	tn := startAPINode(t, rs, nil)
	tn.waitReady(200)
	cl := tn.protoClient()
	ctx := withKey(t, testAPIKey)

	if _, err := cl.SetState(ctx, &notifypb.SetStateRequest{UserId: "7", Fields: map[string]string{"unread": "2", "name": "Bo"}}); err != nil {
		t.Fatal(err)
	}
	if got := tn.redis.HGetAll(ctx, "notify:7:state").Val(); got["unread"] != "2" || got["name"] != "Bo" {
		t.Fatalf("redis has %v", got)
	}
	c := tn.dial(token(t, "7", []string{"news"}, time.Hour), "topic=news")
	if st := c.handshake("7"); st["unread"] != "2" {
		t.Fatalf("state frame %v", st)
	}
	if _, err := cl.DeleteState(ctx, &notifypb.DeleteStateRequest{UserId: "7", Fields: []string{"name"}}); err != nil {
		t.Fatal(err)
	}
	st, err := cl.GetState(ctx, &notifypb.GetStateRequest{UserId: "7"})
	if err != nil || len(st.State) != 1 || st.State["unread"] != "2" {
		t.Fatalf("GetState %v %v", st, err)
	}
	if _, err := cl.DeleteState(ctx, &notifypb.DeleteStateRequest{UserId: "7", All: true}); err != nil {
		t.Fatal(err)
	}
	if n := tn.redis.Exists(ctx, "notify:7:state").Val(); n != 0 {
		t.Fatal("state not deleted")
	}

	resp, err := cl.Publish(ctx, &notifypb.PublishRequest{UserIds: []string{"7", "8"}, Topics: []string{"news"}, Payload: []byte("p1")})
	if err != nil || resp.Targets != 3 {
		t.Fatalf("Publish %v %v", resp, err)
	}
	if resp.Connections != nil {
		t.Fatalf("Publish counted %d connections in pattern mode, where a node cannot know", *resp.Connections)
	}
	for range 2 { // once as user 7, once through the topic
		if s := c.readString(); s != "p1" {
			t.Fatalf("got %q", s)
		}
	}
	pr, err := cl.Presence(ctx, &notifypb.PresenceRequest{UserIds: []string{"7", "nobody"}})
	if err != nil || pr.Connections["7"] != 1 || pr.Connections["nobody"] != 0 || len(pr.Connections) != 2 {
		t.Fatalf("Presence %v %v", pr, err)
	}
	if _, err := cl.Disconnect(ctx, &notifypb.DisconnectRequest{UserId: "7"}); err != nil {
		t.Fatal(err)
	}
	if reason := c.expectClose(transport.CloseDisconnected); reason != "disconnected" {
		t.Fatalf("reason %q", reason)
	}

	// Broker down: unavailable, not a hang and not internal.
	rs.Stop()
	_, err = cl.Publish(ctx, &notifypb.PublishRequest{UserIds: []string{"7"}, Payload: []byte("x")})
	var te twirp.Error
	if !errors.As(err, &te) || te.Code() != twirp.Unavailable {
		t.Fatalf("Publish with Redis down: %v, want unavailable", err)
	}
}

func TestGRPC(t *testing.T) {
	rs := redistest.Start(t)
	tn := startAPINode(t, rs, nil)
	tn.waitReady(200)
	cc := tn.grpcConn()
	ns := notifypb.NewNotifyServiceClient(cc)
	el := notificationspb.NewNotificationsServiceClient(cc)

	grpcAuthIsPublicTheRestKeyed(t, ns, el)
	c := tn.dial(token(t, "g1", []string{"lobby"}, time.Hour), "topic=lobby")
	c.handshake("g1")
	grpcPublishAndBroadcast(t, ns, el, c)
	grpcHealthAndReflection(t, cc)
	if got := tn.metric("notify_api_requests_total", "method", "BroadcastTextMessage", "code", "ok"); got != 3 { // two to users and topics, one to nobody
		t.Fatalf("BroadcastTextMessage ok = %v", got)
	}
	// Draining: health says NOT_SERVING.
	go tn.Shutdown(context.Background())
	eventually(t, "NOT_SERVING", func() bool {
		hr, err := healthpb.NewHealthClient(cc).Check(t.Context(), &healthpb.HealthCheckRequest{})
		return err != nil || hr.Status == healthpb.HealthCheckResponse_NOT_SERVING
	})
}

// grpcAuthIsPublicTheRestKeyed: Auth answers without the API key, Publish
// and BroadcastTextMessage refuse a missing or wrong one.
func grpcAuthIsPublicTheRestKeyed(t *testing.T, ns notifypb.NotifyServiceClient, el notificationspb.NotificationsServiceClient) {
	t.Helper()
	// Auth is public; the rest needs the key.
	ar, err := ns.Auth(t.Context(), &notifypb.AuthRequest{Authorization: token(t, "g1", nil, time.Hour)})
	if err != nil || ar.UserID != "g1" {
		t.Fatalf("Auth %v %v", ar, err)
	}
	if _, err := ns.Publish(t.Context(), &notifypb.PublishRequest{UserIds: []string{"g1"}, Payload: []byte("x")}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Publish without key: %v", err)
	}
	if _, err := el.BroadcastTextMessage(grpcKey(t, "wrong"), &notificationspb.BroadcastTextMessageRequest{Topics: []string{"user:g1"}, Message: "x"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Broadcast with a wrong key: %v", err)
	}
}

// grpcPublishAndBroadcast: with the key, Publish and BroadcastTextMessage
// reach c (user g1 on topic lobby), and bad targets are invalid arguments.
func grpcPublishAndBroadcast(t *testing.T, ns notifypb.NotifyServiceClient, el notificationspb.NotificationsServiceClient, c *wsClient) {
	t.Helper()
	ctx := grpcKey(t, testAPIKey)
	if _, err := ns.Publish(ctx, &notifypb.PublishRequest{UserIds: []string{"g1"}, Payload: []byte("from grpc")}); err != nil {
		t.Fatal(err)
	}
	if s := c.readString(); s != "from grpc" {
		t.Fatalf("got %q", s)
	}
	// The Elixir service's call: user:<id> and group:<name>, message verbatim.
	if _, err := el.BroadcastTextMessage(ctx, &notificationspb.BroadcastTextMessageRequest{
		Topics: []string{"user:g1", "group:lobby"}, Event: "score", Message: `{"score":3}`,
	}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if s := c.readString(); s != `{"score":3}` {
			t.Fatalf("got %q", s)
		}
	}
	// Any other name is the topic of that name, as in the Elixir service;
	// an empty list is a no-op.
	if _, err := el.BroadcastTextMessage(ctx, &notificationspb.BroadcastTextMessageRequest{Topics: []string{"lobby"}, Message: "bare"}); err != nil {
		t.Fatal(err)
	}
	if s := c.readString(); s != "bare" {
		t.Fatalf("got %q", s)
	}
	if _, err := el.BroadcastTextMessage(ctx, &notificationspb.BroadcastTextMessageRequest{Message: "to nobody"}); err != nil {
		t.Fatalf("an empty topic list: %v, want a no-op", err)
	}
	for _, bad := range []string{"user:", "group: ", " ", strings.Repeat("x", 600)} {
		_, err := el.BroadcastTextMessage(ctx, &notificationspb.BroadcastTextMessageRequest{Topics: []string{bad}, Message: "x"})
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("topic %q: %v, want InvalidArgument", bad, err)
		}
	}
	if _, err := ns.Publish(ctx, &notifypb.PublishRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Publish without targets: %v", err)
	}
}

// grpcHealthAndReflection: the standard health and reflection services,
// without a key.
func grpcHealthAndReflection(t *testing.T, cc *grpc.ClientConn) {
	t.Helper()
	// The standard health service, without a key.
	hr, err := healthpb.NewHealthClient(cc).Check(t.Context(), &healthpb.HealthCheckRequest{Service: "notify.NotifyService"})
	if err != nil || hr.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health %v %v", hr, err)
	}
	// Reflection lists both services.
	rc, err := reflectpb.NewServerReflectionClient(cc).ServerReflectionInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Send(&reflectpb.ServerReflectionRequest{MessageRequest: &reflectpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	rr, err := rc.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range rr.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"notify.NotifyService", "notifications.NotificationsService", "grpc.health.v1.Health"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Fatalf("reflection lists %v, missing %s", names, want)
		}
	}
}

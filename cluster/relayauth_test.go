package cluster

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// sentRelay is the request every case signs.
func sentRelay() Relay {
	return Relay{
		Node: "node-0", User: "42", Method: http.MethodGet,
		Target: "/notify/ws?topic=a&envelope=1", Key: "dGhlIHNhbXBsZSBub25jZQ==",
	}
}

// relayCase signs sentRelay with signKey, signedAgo before the verifier's
// clock, changes what arrives as change says, and verifies it.
type relayCase struct {
	name      string
	signKey   []byte
	verifyKey []byte
	signedAgo time.Duration
	change    func(*Relay) // what the verifier sees instead; nil = what was signed
	value     *string      // replaces the header value that arrives
	want      string       // "" = accepted; else a part of the error
}

func relayCases() []relayCase {
	secret, other := []byte("cluster secret"), []byte("another secret")
	ok := func(name string, ago time.Duration) relayCase {
		return relayCase{name: name, signKey: secret, verifyKey: secret, signedAgo: ago}
	}
	tampered := func(name string, change func(*Relay)) relayCase {
		return relayCase{name: "tampered " + name, signKey: secret, verifyKey: secret, change: change, want: "bad relay signature"}
	}
	malformed := func(name, value, want string) relayCase {
		return relayCase{name: name, signKey: secret, verifyKey: secret, value: ptr(value), want: want}
	}
	return []relayCase{
		ok("round trip", 0),
		ok("within the skew, behind", 59*time.Second),
		ok("within the skew, ahead", -59*time.Second),
		{name: "wrong secret", signKey: other, verifyKey: secret, want: "bad relay signature"},
		{name: "stale", signKey: secret, verifyKey: secret, signedAgo: 61 * time.Second, want: "ago"},
		{name: "future", signKey: secret, verifyKey: secret, signedAgo: -61 * time.Second, want: "in the future"},
		tampered("node", func(r *Relay) { r.Node = "node-9" }),
		tampered("user", func(r *Relay) { r.User = "43" }),
		tampered("method", func(r *Relay) { r.Method = http.MethodPost }),
		tampered("path", func(r *Relay) { r.Target = "/notify/sse?topic=a&envelope=1" }),
		tampered("query", func(r *Relay) { r.Target = "/notify/ws?topic=b&envelope=1" }),
		tampered("key (another handshake)", func(r *Relay) { r.Key = "AQIDBAUGBwgJCgsMDQ4PEA==" }),
		tampered("body", func(r *Relay) { r.Body = []byte("x") }),
		// Length prefixes: moving bytes between neighbouring fields changes the text.
		tampered("field boundary", func(r *Relay) { r.Node, r.User = "node-04", "2" }),
		{name: "empty method is GET", signKey: secret, verifyKey: secret, change: func(r *Relay) { r.Method = "" }},
		malformed("missing", "", "missing "+RelayAuthHeader),
		malformed("other version", "v2:1700000000:00", "version"),
		malformed("no signature", "v1:1700000000", "want v1:"),
		malformed("timestamp not a number", "v1:soon:"+strings.Repeat("00", 32), "not a number"),
		malformed("short signature", "v1:1700000000:abcd", "not a hex"),
		malformed("random signature", "v1:1700000000:"+strings.Repeat("ab", 32), "bad relay signature"),
		{name: "nil secret on the signer", signKey: nil, verifyKey: secret, want: "missing " + RelayAuthHeader},
		{name: "nil secret on the verifier", signKey: secret, verifyKey: nil, want: "NOTIFY_CLUSTER_SECRET or NOTIFY_GOSSIP_KEY"},
	}
}

func TestRelayAuth(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	for _, tt := range relayCases() {
		t.Run(tt.name, func(t *testing.T) {
			signer, verifier := NewPeerAuth(tt.signKey), NewPeerAuth(tt.verifyKey)
			signer.now = func() time.Time { return now.Add(-tt.signedAgo) }
			verifier.now = func() time.Time { return now }

			value := signer.SignRelay(sentRelay())
			if tt.signKey != nil && (value == "" || strings.Contains(value, string(tt.signKey))) {
				t.Fatalf("value %q: want a signature, never the secret", value)
			}
			if tt.value != nil {
				value = *tt.value
			}
			got := sentRelay()
			if tt.change != nil {
				tt.change(&got)
			}
			checkAuthErr(t, verifier.VerifyRelay(value, got), tt.want)
		})
	}
}

// TestRelayAuthIsNotPeerAuth: a presence call's signature, made at the
// same moment with the same secret, is no relay signature.
func TestRelayAuthIsNotPeerAuth(t *testing.T) {
	a := NewPeerAuth([]byte("cluster secret"))
	rl := sentRelay()
	req, err := http.NewRequest(rl.Method, "http://10.0.0.2:3000"+rl.Target, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.Sign(req, nil)
	checkAuthErr(t, a.VerifyRelay(req.Header.Get(PeerAuthHeader), rl), "bad relay signature")
}

func checkAuthErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("got %v, want nil", err)
	case want == "":
	case err == nil:
		t.Fatalf("got nil, want an error with %q", want)
	case !errors.Is(err, ErrPeerAuth) || !strings.Contains(err.Error(), want):
		t.Fatalf("got %v, want ErrPeerAuth with %q", err, want)
	}
}

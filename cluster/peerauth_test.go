package cluster

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestSecret(t *testing.T) {
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	otherKey := base64.StdEncoding.EncodeToString([]byte("fedcba9876543210"))
	// HMAC-SHA256(key, "notify cluster secret v1"), computed outside Go: every
	// node of a cluster, whatever its version, must derive the same secret.
	const derived = "09e77b80efd1bab9a715c525c4a73945d01613fc6ad2e1c0786c7ef29f620213"
	tests := []struct {
		name          string
		clusterSecret string
		gossipKey     string
		want          string // hex; "" = nil
		wantErr       string
	}{
		{"explicit secret wins", "s3cret", key, hex.EncodeToString([]byte("s3cret")), ""},
		{"explicit secret wins over a bad gossip key", "s3cret", "not base64!", hex.EncodeToString([]byte("s3cret")), ""},
		{"derived from the gossip key", "", key, derived, ""},
		{"bad gossip key", "", "not base64!", "", "NOTIFY_GOSSIP_KEY"},
		{"gossip key of a bad length", "", base64.StdEncoding.EncodeToString([]byte("short")), "", "NOTIFY_GOSSIP_KEY"},
		{"neither", "", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Secret(tt.clusterSecret, tt.gossipKey)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Secret = %x, %v; want an error naming %s", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == "" && got != nil {
				t.Fatalf("Secret = %x, want nil", got)
			}
			if hex.EncodeToString(got) != tt.want {
				t.Fatalf("Secret = %x, want %s", got, tt.want)
			}
		})
	}

	a, _ := Secret("", key)
	again, _ := Secret("", key)
	other, _ := Secret("", otherKey)
	raw, _ := DecodeKey(key)
	switch {
	case !bytes.Equal(a, again):
		t.Fatalf("derivation not stable: %x, then %x", a, again)
	case bytes.Equal(a, other):
		t.Fatalf("two gossip keys derive the same secret %x", a)
	case bytes.Contains(a, raw):
		t.Fatalf("derived secret %x contains the gossip key", a)
	}
}

// peerCase is a request signed as POST sentTarget with sentBody, changed on
// the way as the fields say, and verified.
type peerCase struct {
	name      string
	signKey   []byte
	verifyKey []byte
	signedAgo time.Duration // the signer's clock is behind the verifier's by this
	method    string        // what arrives; "" = the method sent
	target    string        // what arrives; "" = the target sent
	body      *string       // what arrives; nil = the body sent
	header    *string       // replaces the header that arrives
	want      string        // "" = accepted; else a part of the error
}

const (
	sentTarget = "/twirp/notify.NotifyService/Presence?node=a&x=1"
	sentBody   = `{"user_ids":["42"]}`
)

func ptr(s string) *string { return &s }

func peerCases() []peerCase {
	secret, other := []byte("cluster secret"), []byte("another secret")
	return []peerCase{
		{name: "round trip", signKey: secret, verifyKey: secret},
		{name: "wrong secret", signKey: other, verifyKey: secret, want: "bad signature"},
		{name: "tampered body", signKey: secret, verifyKey: secret, body: ptr(`{"user_ids":["43"]}`), want: "bad signature"},
		{name: "tampered path", signKey: secret, verifyKey: secret, target: "/twirp/notify.NotifyService/Disconnect?node=a&x=1", want: "bad signature"},
		{name: "tampered query", signKey: secret, verifyKey: secret, target: "/twirp/notify.NotifyService/Presence?node=b&x=1", want: "bad signature"},
		{name: "tampered method", signKey: secret, verifyKey: secret, method: http.MethodPut, want: "bad signature"},
		{name: "within the skew, behind", signKey: secret, verifyKey: secret, signedAgo: 59 * time.Second},
		{name: "within the skew, ahead", signKey: secret, verifyKey: secret, signedAgo: -59 * time.Second},
		{name: "stale", signKey: secret, verifyKey: secret, signedAgo: 61 * time.Second, want: "ago"},
		{name: "future", signKey: secret, verifyKey: secret, signedAgo: -61 * time.Second, want: "in the future"},
		{name: "missing header", signKey: secret, verifyKey: secret, header: ptr(""), want: "missing " + PeerAuthHeader},
		{name: "other version", signKey: secret, verifyKey: secret, header: ptr("v2:1700000000:00"), want: "version"},
		{name: "no signature", signKey: secret, verifyKey: secret, header: ptr("v1:1700000000"), want: "want v1:"},
		{name: "timestamp not a number", signKey: secret, verifyKey: secret, header: ptr("v1:soon:" + strings.Repeat("00", 32)), want: "not a number"},
		{name: "short signature", signKey: secret, verifyKey: secret, header: ptr("v1:1700000000:abcd"), want: "not a hex"},
		{name: "nil secret on the signer", signKey: nil, verifyKey: secret, want: "missing " + PeerAuthHeader},
		{name: "nil secret on the verifier", signKey: secret, verifyKey: nil, want: "NOTIFY_CLUSTER_SECRET or NOTIFY_GOSSIP_KEY"},
		{name: "nil secret on both", signKey: nil, verifyKey: nil, want: "NOTIFY_CLUSTER_SECRET or NOTIFY_GOSSIP_KEY"},
	}
}

func TestPeerAuth(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	for _, tt := range peerCases() {
		t.Run(tt.name, func(t *testing.T) {
			signer, verifier := NewPeerAuth(tt.signKey), NewPeerAuth(tt.verifyKey)
			signer.now = func() time.Time { return now.Add(-tt.signedAgo) }
			verifier.now = func() time.Time { return now }

			out, err := http.NewRequest(http.MethodPost, "http://10.0.0.2:3000"+sentTarget, strings.NewReader(sentBody))
			if err != nil {
				t.Fatal(err)
			}
			signer.Sign(out, []byte(sentBody))
			if h := out.Header.Get(PeerAuthHeader); tt.signKey != nil && (h == "" || strings.Contains(h, string(tt.signKey)) || strings.Contains(h, hex.EncodeToString(tt.signKey))) {
				t.Fatalf("header %q: want a signature, never the secret", h)
			}

			method, target, body := cmp.Or(tt.method, http.MethodPost), cmp.Or(tt.target, sentTarget), sentBody
			if tt.body != nil {
				body = *tt.body
			}
			in := httptest.NewRequest(method, target, strings.NewReader(body))
			in.Header = out.Header.Clone()
			if tt.header != nil {
				in.Header.Set(PeerAuthHeader, *tt.header)
			}
			err = verifier.Verify(in, []byte(body))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Verify = %v, want nil", err)
			case tt.want == "":
			case err == nil:
				t.Fatalf("Verify = nil, want an error with %q", tt.want)
			case !errors.Is(err, ErrPeerAuth) || !strings.Contains(err.Error(), tt.want):
				t.Fatalf("Verify = %v, want ErrPeerAuth with %q", err, tt.want)
			}
		})
	}
}

// Over a real connection: what the server reads from the request line is
// what the client signed, query escapes included.
func TestPeerAuthOverHTTP(t *testing.T) {
	secret := []byte("cluster secret")
	verifier := NewPeerAuth(secret)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err == nil {
			err = verifier.Verify(r, body)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
		}
	}))
	defer srv.Close()

	for _, tt := range []struct {
		name string
		key  []byte
		want int
	}{
		{"same secret", secret, http.StatusOK},
		{"other secret", []byte("another secret"), http.StatusUnauthorized},
	} {
		body := []byte(`{"user_ids":["a b","ü"]}`)
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/twirp/x/Presence?user=a%20b&topic=%C3%BC", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		NewPeerAuth(tt.key).Sign(req, body)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s: status %d (%s), want %d", tt.name, resp.StatusCode, bytes.TrimSpace(msg), tt.want)
		}
	}
}

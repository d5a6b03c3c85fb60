package placement

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/notify-dev/notify/cluster"
)

// TestRelayedBy: only a relay signed for this request and user names its
// node; anything else is a client's, and loses the relay headers.
func TestRelayedBy(t *testing.T) {
	secret := []byte("cluster secret")
	signed := func(node, user string, key []byte) http.Header {
		sig := cluster.NewPeerAuth(key).SignRelay(cluster.Relay{Node: node, User: user, Method: http.MethodGet, Target: "/notify/ws?topic=a"})
		return http.Header{ForwardedByHeader: {node}, cluster.RelayAuthHeader: {sig}}
	}
	tests := []struct {
		name   string
		secret []byte // this node's
		header http.Header
		want   string
	}{
		{"direct client", secret, nil, ""},
		{"signed relay", secret, signed("b", "u", secret), "b"},
		{"unsigned claim", secret, http.Header{ForwardedByHeader: {"b"}}, ""},
		{"signature without a name", secret, http.Header{cluster.RelayAuthHeader: signed("b", "u", secret)[cluster.RelayAuthHeader]}, ""},
		{"signed for another user", secret, signed("b", "v", secret), ""},
		{"another secret", secret, signed("b", "u", []byte("another secret")), ""},
		{"no secret here", nil, signed("b", "u", secret), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, "a")
			f.p.cfg.Auth = cluster.NewPeerAuth(tt.secret)
			r := httptest.NewRequest(http.MethodGet, "/notify/ws?topic=a", nil)
			for k, v := range tt.header {
				r.Header[k] = v
			}
			if got := f.p.RelayedBy(r, "u"); got != tt.want {
				t.Fatalf("RelayedBy = %q, want %q", got, tt.want)
			}
			kept := r.Header.Get(ForwardedByHeader) != "" || r.Header.Get(cluster.RelayAuthHeader) != ""
			if kept != (tt.want != "") {
				t.Fatalf("relay headers left %v on a request relayed by %q", r.Header, tt.want)
			}
		})
	}
}

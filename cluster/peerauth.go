package cluster

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// PeerAuthHeader carries a node-to-node request's authentication:
// "v1:<unix seconds>:<hex HMAC-SHA256>". The secret itself never travels.
const PeerAuthHeader = "X-Notify-Peer-Auth"

// ErrPeerAuth is wrapped by every error of PeerAuth.Verify.
var ErrPeerAuth = errors.New("peer authentication failed")

const (
	// peerAuthVersion starts the header and the signed text: a change of
	// the scheme gets a new version rather than a silent mismatch.
	peerAuthVersion = "v1"
	// peerAuthSkew is how far the signer's clock may be off ours, either
	// way, and so how long a signed request stays valid.
	peerAuthSkew = 60 * time.Second
	// secretLabel is what the gossip key signs to derive the cluster secret
	// from it, versioned like the header.
	secretLabel = "notify cluster secret v1"
)

// Secret returns the key nodes authenticate each other with: clusterSecret
// (NOTIFY_CLUSTER_SECRET) when set; else one derived from the gossip key
// (NOTIFY_GOSSIP_KEY, base64) by HMAC-SHA256 over a fixed, versioned label;
// else nil, and node-to-node calls are then refused.
func Secret(clusterSecret, gossipKey string) ([]byte, error) {
	if clusterSecret != "" {
		return []byte(clusterSecret), nil
	}
	key, err := DecodeKey(gossipKey)
	if err != nil {
		return nil, fmt.Errorf("NOTIFY_GOSSIP_KEY: %w", err)
	}
	if key == nil {
		return nil, nil
	}
	// Derived, not the gossip key itself: a leaked peer secret must not
	// decrypt gossip.
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(secretLabel))
	return mac.Sum(nil), nil
}

// PeerAuth signs and checks node-to-node HTTP requests with the cluster
// secret. Its methods may be called from any goroutine.
type PeerAuth struct {
	secret []byte           // nil: none configured, every request is refused
	now    func() time.Time // the clock, replaced by tests
}

// NewPeerAuth returns a PeerAuth with secret (nil or empty: none, so that
// Sign adds nothing and Verify refuses everything).
func NewPeerAuth(secret []byte) *PeerAuth {
	a := &PeerAuth{now: time.Now}
	if len(secret) > 0 {
		a.secret = append([]byte(nil), secret...)
	}
	return a
}

// Sign adds the authentication header to a request whose body is body.
// Without a secret it adds nothing (the peer refuses the request).
func (a *PeerAuth) Sign(r *http.Request, body []byte) {
	if a.secret == nil {
		return
	}
	ts := strconv.FormatInt(a.now().Unix(), 10)
	sig := a.mac(ts, r.Method, r.URL.RequestURI(), body)
	r.Header.Set(PeerAuthHeader, peerAuthVersion+":"+ts+":"+hex.EncodeToString(sig))
}

// Verify checks the authentication header of a request whose body is body.
// Its errors say why (no secret configured on this node, missing or
// malformed header, bad signature, too old or from the future) and wrap
// ErrPeerAuth.
func (a *PeerAuth) Verify(r *http.Request, body []byte) error {
	if a.secret == nil {
		return fmt.Errorf("%w: no cluster secret on this node: set NOTIFY_CLUSTER_SECRET or NOTIFY_GOSSIP_KEY", ErrPeerAuth)
	}
	h := r.Header.Get(PeerAuthHeader)
	if h == "" {
		return fmt.Errorf("%w: missing %s header", ErrPeerAuth, PeerAuthHeader)
	}
	ts, sig, err := parsePeerAuth(h)
	if err != nil {
		return fmt.Errorf("%w: %s header: %w", ErrPeerAuth, PeerAuthHeader, err)
	}
	// r.URL.RequestURI, not r.RequestURI: the same path and query whether
	// the request line carried them alone or in an absolute URL.
	if !hmac.Equal(sig, a.mac(ts, r.Method, r.URL.RequestURI(), body)) {
		return fmt.Errorf("%w: bad signature (another cluster secret, or the request was changed)", ErrPeerAuth)
	}
	// Checked after the signature, so that the time is the signer's.
	return a.fresh(ts)
}

// fresh checks that the timestamp ts (checked by parsePeerAuth) is within
// the skew of our clock.
func (a *PeerAuth) fresh(ts string) error {
	unix, _ := strconv.ParseInt(ts, 10, 64)
	switch age := a.now().Sub(time.Unix(unix, 0)); {
	case age > peerAuthSkew:
		return fmt.Errorf("%w: signed %s ago, more than %s (clocks apart?)", ErrPeerAuth, age.Round(time.Second), peerAuthSkew)
	case age < -peerAuthSkew:
		return fmt.Errorf("%w: signed %s in the future, more than %s (clocks apart?)", ErrPeerAuth, (-age).Round(time.Second), peerAuthSkew)
	}
	return nil
}

// mac is the HMAC-SHA256, keyed by the secret, over the version, the
// timestamp, the method, the path with query and the SHA-256 of the body,
// one per line.
func (a *PeerAuth) mac(ts, method, target string, body []byte) []byte {
	if method == "" {
		method = http.MethodGet // what net/http sends for an empty Method
	}
	bodySum := sha256.Sum256(body)
	m := hmac.New(sha256.New, a.secret)
	for _, part := range []string{peerAuthVersion, ts, method, target, hex.EncodeToString(bodySum[:])} {
		m.Write([]byte(part))
		m.Write([]byte{'\n'})
	}
	return m.Sum(nil)
}

// parsePeerAuth splits "v1:<unix seconds>:<hex signature>".
func parsePeerAuth(h string) (ts string, sig []byte, err error) {
	version, rest, _ := strings.Cut(h, ":")
	if version != peerAuthVersion {
		return "", nil, fmt.Errorf("version %q, want %s", version, peerAuthVersion)
	}
	ts, hexSig, ok := strings.Cut(rest, ":")
	if !ok {
		return "", nil, errors.New("want v1:<unix seconds>:<signature>")
	}
	if _, err := strconv.ParseInt(ts, 10, 64); err != nil {
		return "", nil, fmt.Errorf("timestamp %q is not a number", ts)
	}
	sig, err = hex.DecodeString(hexSig)
	if err != nil || len(sig) != sha256.Size {
		return "", nil, errors.New("signature is not a hex HMAC-SHA256")
	}
	return ts, sig, nil
}

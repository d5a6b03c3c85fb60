package placement

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"github.com/notify-dev/notify/cluster"
	"github.com/notify-dev/notify/transport"
)

const (
	relayDialTimeout      = 500 * time.Millisecond
	relayHandshakeTimeout = 3 * time.Second
)

// RelayedBy names the node that relayed r here for user, or "" (see
// relayFrom).
func (p *Placement) RelayedBy(r *http.Request, user string) string {
	return strings.Clone(p.relayFrom(r, user, nil)) // kept with the client: not a piece of the request
}

// relayFrom returns the node that relayed r (whose body is body) here for
// user: the one X-Notify-Forwarded-By names, when cluster.RelayAuthHeader
// holds a fresh signature by the cluster secret of that name, this user and
// this request (method, path and query, Sec-WebSocket-Key, body). Anything
// else is a client's request, whatever it claims: the relay headers are
// removed, so that nothing after this trusts them, and "" returned. Without
// a secret on this node nothing verifies, so relayed requests are served
// like direct ones: the owner serves them, only unattributed (a draining
// relay's clients are cut when it stops, not closed by the owner), and
// while rings disagree one may be relayed again.
func (p *Placement) relayFrom(r *http.Request, user string, body []byte) string {
	node, sig := r.Header.Get(ForwardedByHeader), r.Header.Get(cluster.RelayAuthHeader)
	if node == "" && sig == "" {
		return ""
	}
	err := p.cfg.Auth.VerifyRelay(sig, relayOf(r.Method, r.URL.RequestURI(), r.Header, node, user, body))
	if err == nil && node != "" {
		return node
	}
	r.Header.Del(ForwardedByHeader)
	r.Header.Del(cluster.RelayAuthHeader)
	p.metrics.unverified.Inc()
	// Debug: any client can send the header, and each would be a line.
	p.log.Debug("relay header not honoured; serving the request as a client's", "claimed_by", node, "remote", r.RemoteAddr, "err", err)
	return ""
}

// relayOf is what a relay signature covers, as the owner will see the
// request: the method and target sent, the handshake's key, the body.
func relayOf(method, target string, h http.Header, node, user string, body []byte) cluster.Relay {
	return cluster.Relay{Node: node, User: user, Method: method, Target: target, Key: h.Get("Sec-WebSocket-Key"), Body: body}
}

// relayHeader is what a request this node relays carries instead of the
// client's values of these names: this node's name and its signature of rl.
// Without a secret the signature's value is nil: the client's is dropped and
// none is sent.
func (p *Placement) relayHeader(rl cluster.Relay) http.Header {
	h := http.Header{ForwardedByHeader: {p.cfg.NodeName}, cluster.RelayAuthHeader: nil}
	if sig := p.cfg.Auth.SignRelay(rl); sig != "" {
		h[cluster.RelayAuthHeader] = []string{sig}
	}
	return h
}

// RelayToOwner relays a handshake to the user's owner when that is another
// node and the request was not relayed already, and reports whether the
// request is answered; false means serve it here. An owner that cannot be
// reached means this node serves the client (availability first), counted.
//
// A relayed request (one whose signature verifies, see relayFrom) is
// served where it lands, never relayed again (no loops). If this node's ring names another owner, the relaying node's ring
// was out of date: the rebalance then looks again shortly and moves the
// client once the views agree.
func (p *Placement) RelayToOwner(w http.ResponseWriter, r *http.Request, user string) bool {
	owner, addr := p.Owner(user)
	if p.relayFrom(r, user, nil) != "" {
		if owner != "" {
			signal(p.recheck)
		}
		return false
	}
	if owner == "" {
		return false
	}
	if addr == "" {
		p.relayFailed(owner, addr, errors.New("no relay address"))
		return false
	}
	// RelayTo replays the handshake as a GET of the same target.
	hdr := p.relayHeader(relayOf(http.MethodGet, r.URL.RequestURI(), r.Header, p.cfg.NodeName, user, nil))
	p.relayed.Add(1)
	p.metrics.forwarded.Inc()
	err := p.cfg.Transport.RelayTo(w, r, transport.RelayOptions{
		Addr:             addr,
		Header:           hdr,
		DialTimeout:      relayDialTimeout,
		HandshakeTimeout: relayHandshakeTimeout,
		OnClose:          p.relayEnded,
		// The owner alone counts a user's connections: its 429 stands.
		PassOn: func(status int) bool { return status == http.StatusTooManyRequests },
	})
	if err == nil {
		return true
	}
	if errors.Is(err, transport.ErrPassedOn) {
		p.relayEnded()
		return true
	}
	p.relayEnded()
	p.relayFailed(owner, addr, err)
	return !errors.Is(err, transport.ErrNotRelayed)
}

func (p *Placement) relayEnded() {
	p.metrics.forwarded.Dec()
	p.relayed.Add(-1)
}

func (p *Placement) relayFailed(owner, addr string, err error) {
	p.metrics.forwardErrors.Inc()
	msg := "relay to the owner failed"
	if errors.Is(err, transport.ErrNotRelayed) {
		msg = "cannot relay to the owner; serving locally"
	}
	p.log.Warn(msg, "owner", owner, "addr", addr, "err", err)
}

// RelayRequestToOwner passes a plain request (a long poll, whose session
// lives on the owner) with its body, already read, to the user's owner, and
// reports whether it did. false: nothing was written (the owner is this node
// or cannot be reached).
func (p *Placement) RelayRequestToOwner(w http.ResponseWriter, r *http.Request, user string, body []byte) bool {
	owner, addr := p.Owner(user)
	if via := p.relayFrom(r, user, body); owner == "" || via != "" {
		return false
	}
	if addr == "" {
		p.relayFailed(owner, addr, errors.New("no relay address"))
		return false
	}
	out := r.Clone(r.Context())
	out.Body = io.NopCloser(bytes.NewReader(body))
	out.ContentLength = int64(len(body))
	var failure error
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: "http", Host: addr})
			rl := relayOf(pr.Out.Method, pr.Out.URL.RequestURI(), pr.Out.Header, p.cfg.NodeName, user, body)
			for k, v := range p.relayHeader(rl) {
				pr.Out.Header.Del(k)
				for _, s := range v {
					pr.Out.Header.Add(k, s)
				}
			}
			pr.SetXForwarded()
		},
		Transport:    p.proxy,
		ErrorHandler: func(_ http.ResponseWriter, _ *http.Request, err error) { failure = err },
	}
	rp.ServeHTTP(w, out)
	if failure != nil {
		p.relayFailed(owner, addr, errors.Join(transport.ErrNotRelayed, failure))
		return false
	}
	return true
}

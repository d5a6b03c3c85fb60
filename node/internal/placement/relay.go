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

	"github.com/notify-dev/notify/transport"
)

const (
	relayDialTimeout      = 500 * time.Millisecond
	relayHandshakeTimeout = 3 * time.Second
)

// RelayedBy names the node that relayed r here, or "".
func (p *Placement) RelayedBy(r *http.Request) string {
	return strings.Clone(r.Header.Get(ForwardedByHeader)) // kept with the client: not a piece of the request
}

// RelayToOwner relays a handshake to the user's owner when that is another
// node and the request was not relayed already, and reports whether the
// request is answered; false means serve it here. An owner that cannot be
// reached means this node serves the client (availability first), counted.
//
// A relayed request is served where it lands, never relayed again (no
// loops). If this node's ring names another owner, the relaying node's ring
// was out of date: the rebalance then looks again shortly and moves the
// client once the views agree.
func (p *Placement) RelayToOwner(w http.ResponseWriter, r *http.Request, user string) bool {
	owner, addr := p.Owner(user)
	if r.Header.Get(ForwardedByHeader) != "" {
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
	p.relayed.Add(1)
	p.metrics.forwarded.Inc()
	err := p.cfg.Transport.RelayTo(w, r, transport.RelayOptions{
		Addr:             addr,
		Header:           http.Header{ForwardedByHeader: {p.cfg.NodeName}},
		DialTimeout:      relayDialTimeout,
		HandshakeTimeout: relayHandshakeTimeout,
		OnClose:          p.relayEnded,
	})
	if err == nil {
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
	if owner == "" || r.Header.Get(ForwardedByHeader) != "" {
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
			pr.Out.Header.Set(ForwardedByHeader, p.cfg.NodeName)
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

package admission

import (
	"errors"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"time"

	"github.com/notify-dev/notify/node/internal/hub"
	"github.com/notify-dev/notify/node/internal/respond"
	"github.com/notify-dev/notify/transport"
)

// StateReadTimeout bounds the read of a user's state during a handshake.
const StateReadTimeout = 5 * time.Second

// Register puts c in the hub, in its user's and topics' sets, then reads
// its snapshot: the state and, with history on, where its streams stand
// (ReadSnapshot). A message published from here on reaches c and is not
// lost: queued until c is attached, behind the frames its protocol sends
// first; with history on, offered to c's hub.Hold so that the replay goes
// first and nothing comes twice. When the snapshot cannot be read the
// request is refused with 503 and c unregistered.
func (p *Pipeline) Register(w http.ResponseWriter, r *http.Request, c *hub.Client, topics []string, res Resume) (*Snapshot, bool) {
	h := p.cfg.Hub
	if !p.AddClient(w, c, true, nil) {
		return nil, false
	}
	for _, t := range topics {
		h.JoinTopic(c, t)
	}
	snap, err := p.ReadSnapshot(r.Context(), c.User, topics, res)
	if err != nil {
		p.fail(r, c, "state read", err)
		p.Refuse(w, http.StatusServiceUnavailable, RejectState, "state store unavailable, retry later")
		return nil, false
	}
	return snap, true
}

// Upgrade completes a WebSocket handshake (transport.Upgrade): the
// connection, the bytes read past the request, and the 101 response, with
// X-Notify-Node and extra, for Attach to write first. On failure c is
// unregistered, and the failure counted and logged: the connection is gone.
func (p *Pipeline) Upgrade(w http.ResponseWriter, r *http.Request, c *hub.Client, extra http.Header) (nc net.Conn, buffered, response []byte, ok bool) {
	hdr := p.nodeHeader // read only: shared by every handshake without extra
	if len(extra) > 0 {
		hdr = hdr.Clone()
		maps.Copy(hdr, extra)
	}
	nc, buffered, response, err := transport.Upgrade(w, r, hdr)
	if err != nil {
		p.Count(RejectUpgrade)
		p.fail(r, c, "upgrade", err)
		if errors.Is(err, http.ErrNotSupported) { // not taken over: w still answers
			respond.Error(w, http.StatusInternalServerError, "this connection cannot be upgraded")
		}
		return nil, nil, nil, false
	}
	return nc, buffered, response, true
}

// Hijack takes over the connection of a streaming response (Server-Sent
// Events); on failure as Upgrade.
func (p *Pipeline) Hijack(w http.ResponseWriter, r *http.Request, c *hub.Client) (net.Conn, bool) {
	nc, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		p.Count(RejectUpgrade)
		p.fail(r, c, "hijack", err)
		return nil, false
	}
	return nc, true
}

// Attach hands an upgraded connection to an event loop, the response (see
// transport.Server.Attach), then the first frames before anything queued
// meanwhile, and counts c as open. On failure c is
// unregistered, and the failure counted and logged.
func (p *Pipeline) Attach(r *http.Request, c *hub.Client, conn *transport.Conn, nc net.Conn, buffered, response []byte, first ...[]byte) {
	p.cfg.Hub.Opened(c) // before: the client may read its first frames at once
	if err := p.cfg.Transport.Attach(conn, nc, buffered, response, first...); err != nil {
		p.Count(RejectUpgrade)
		p.fail(r, c, "attach", err)
		return
	}
	p.cfg.Hub.Accepted(c)
	p.log.Debug("connected", "user", c.User, "transport", c.Transport.String(), "remote", r.RemoteAddr)
}

// fail unregisters the client of a handshake that was admitted but could
// not be completed, and logs it (the caller counts it): what the client
// caused (it hung up mid-handshake) at debug, what the node caused at warn.
func (p *Pipeline) fail(r *http.Request, c *hub.Client, stage string, err error) {
	p.cfg.Hub.Remove(c, 0, 0)
	level := slog.LevelDebug
	if stage == "attach" || stage == "state read" {
		level = slog.LevelWarn
	}
	p.log.Log(r.Context(), level, "handshake failed", "stage", stage, "user", c.User,
		"transport", c.Transport.String(), "remote", r.RemoteAddr, "err", err)
}

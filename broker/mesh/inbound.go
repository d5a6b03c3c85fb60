package mesh

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The peer's side of a link: the upgrade, then one goroutine per inbound
// connection that delivers messages in order, answers state calls, and
// acks.

// sender is what this node received from one peer's link (of one epoch).
type sender struct {
	// mu is held while one of the sender's messages is delivered: a
	// reconnection's resends and the old connection's last frames cannot
	// interleave.
	mu    sync.Mutex
	epoch string
	last  uint64   // the last sequence number delivered of epoch
	conn  net.Conn // the current connection; a newer one closes it
}

func (s *sender) lock()   { s.mu.Lock() }
func (s *sender) unlock() { s.mu.Unlock() }

// ServeLink is GET LinkPath: a peer opens its link to this node. The
// request must be signed with the cluster secret (cluster.PeerAuth), name
// this node as "to", and ask for the Protocol upgrade. The connection is
// then the Mesh's until it fails or Run ends.
func (m *Mesh) ServeLink(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	from, to, epoch := q.Get("from"), q.Get("to"), q.Get("epoch")
	switch {
	case !strings.EqualFold(r.Header.Get("Upgrade"), Protocol):
		http.Error(w, "want Upgrade: "+Protocol, http.StatusBadRequest)
		return
	case from == "" || epoch == "" || len(epoch) > 64 || from == m.cfg.NodeName:
		http.Error(w, "want from (another node), to and epoch", http.StatusBadRequest)
		return
	}
	if err := m.cfg.Auth.Verify(r, nil); err != nil {
		m.log.Warn("mesh link refused", "remote", r.RemoteAddr, "from", from, "err", err)
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	if to != m.cfg.NodeName {
		// An address reused by another node (a restart under a new name).
		http.Error(w, fmt.Sprintf("this is %s, not %s", m.cfg.NodeName, to), http.StatusConflict)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "cannot take the connection: "+err.Error(), http.StatusInternalServerError)
		return
	}
	if err := m.accept(conn, brw.Reader, from, epoch); err != nil {
		m.log.Debug("mesh link upgrade failed", "from", from, "err", err)
		conn.Close()
	}
}

// accept answers the upgrade and hands the connection to a task.
func (m *Mesh) accept(conn net.Conn, br *bufio.Reader, from, epoch string) error {
	_ = conn.SetDeadline(time.Now().Add(dialTimeout))
	s, err := m.senderOf(from)
	if err != nil {
		return err
	}
	acked, old := s.attach(conn, epoch)
	if old != nil {
		old.Close() // its reader stops at its next frame: the sender reconnected
	}
	resp := "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + Protocol + "\r\n" +
		AckedHeader + ": " + strconv.FormatUint(acked, 10) + "\r\n\r\n"
	if _, err := conn.Write([]byte(resp)); err != nil {
		s.detach(conn)
		return err
	}
	_ = conn.SetDeadline(time.Time{})
	if !m.tasks.Go(func(ctx context.Context) { m.serveInbound(ctx, conn, br, s, epoch) }) {
		s.detach(conn)
		return errors.New("mesh stopped")
	}
	return nil
}

// senderOf returns the record of a peer's link, made on its first link.
// The records are bounded: beyond maxSenders, those with no connection
// are forgotten (their peers are gone; a new link of theirs starts over).
func (m *Mesh) senderOf(from string) (*sender, error) {
	m.inMu.Lock()
	defer m.inMu.Unlock()
	if s := m.senders[from]; s != nil {
		return s, nil
	}
	if len(m.senders) >= maxSenders {
		for name, s := range m.senders {
			if s.idle() {
				delete(m.senders, name)
			}
		}
		if len(m.senders) >= maxSenders {
			return nil, errors.New("too many peers")
		}
	}
	s := &sender{}
	m.senders[from] = s
	return s, nil
}

// attach makes conn the sender's connection for epoch and returns what was
// delivered of that epoch, and the connection it replaces.
func (s *sender) attach(conn net.Conn, epoch string) (acked uint64, old net.Conn) {
	s.lock()
	defer s.unlock()
	if s.epoch != epoch {
		s.epoch, s.last = epoch, 0
	}
	old, s.conn = s.conn, conn
	return s.last, old
}

// detach closes conn and forgets it, unless a newer one replaced it.
func (s *sender) detach(conn net.Conn) {
	conn.Close()
	s.lock()
	if s.conn == conn {
		s.conn = nil
	}
	s.unlock()
}

func (s *sender) idle() bool {
	if !s.mu.TryLock() {
		return false // delivering
	}
	defer s.mu.Unlock()
	return s.conn == nil
}

func (s *sender) lastSeq() uint64 {
	s.lock()
	defer s.unlock()
	return s.last
}

// serveInbound reads a peer's frames until the connection fails or ctx
// ends: messages are delivered to the local handler in order (a resent one
// already delivered is skipped), state calls answered; whenever the read
// buffer runs dry, one ack says how far delivery got, and the replies
// gathered meanwhile go with it in one write.
func (m *Mesh) serveInbound(ctx context.Context, conn net.Conn, br *bufio.Reader, s *sender, epoch string) {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer s.detach(conn)
	var buf, out []byte
	needAck := false
	for {
		_ = conn.SetReadDeadline(time.Now().Add(readTimeout))
		typ, body, grown, err := readFrame(br, buf, maxFrameIn)
		buf = grown
		if cap(buf) > maxKeptBuffer {
			buf = nil // body is still valid: it is the old array's
		}
		if err == nil {
			out, err = m.serveFrame(typ, body, s, epoch, out)
		}
		if err != nil {
			m.log.Debug("mesh inbound link ended", "err", err)
			return
		}
		needAck = needAck || typ == frameMsg || typ == framePing
		if br.Buffered() > 0 && len(out) < writeBuffer {
			continue
		}
		if needAck {
			out, needAck = appendAck(out, s.lastSeq()), false
		}
		if len(out) > 0 {
			_ = conn.SetWriteDeadline(time.Now().Add(writeTimeout))
			if _, err := conn.Write(out); err != nil {
				return
			}
			out = out[:0]
		}
	}
}

// serveFrame handles one frame from the opener; replies are appended to out.
func (m *Mesh) serveFrame(typ byte, body []byte, s *sender, epoch string, out []byte) ([]byte, error) {
	switch typ {
	case frameMsg:
		f, err := decodeMsg(body)
		if err != nil {
			return out, err
		}
		return out, m.deliver(s, epoch, f)
	case framePing:
		return out, nil
	case frameCall:
		c, err := decodeCall(body)
		if err != nil {
			return out, err
		}
		fields, cerr := m.serveCall(c)
		reply := appendReply(nil, c.id, fields, cerr)
		if len(reply)-frameHeader > m.maxFrame {
			reply = appendReply(nil, c.id, nil, errors.New("state too large for a link frame"))
		}
		return append(out, reply...), nil
	}
	return out, fmt.Errorf("%w: type %d from the opener", errFrame, typ)
}

// deliver hands a peer's message to the local handler, once, in order.
// errReplaced: a newer connection of the sender took over.
func (m *Mesh) deliver(s *sender, epoch string, f msgFrame) error {
	s.lock()
	defer s.unlock()
	switch {
	case s.epoch != epoch:
		return errReplaced
	case f.seq <= s.last:
		return nil // delivered before a reconnection; resent
	}
	if err := m.local.Publish(context.Background(), f.channel, f.payload); err != nil {
		return err
	}
	s.last = f.seq
	m.metrics.received.Inc()
	return nil
}

var errReplaced = errors.New("replaced by a newer connection of the peer")

// Package transport serves client connections. A WebSocket connection is
// upgraded by net/http and then handed to one of a few event loops (epoll on
// Linux) that read, write and time it without a goroutine per connection.
package transport

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"runtime"
	"sync/atomic"
	"time"
)

// Config of a Server. Zero fields take the defaults of DefaultConfig.
type Config struct {
	PingInterval   time.Duration // server ping; a connection silent for 2 intervals is closed
	MaxMessageSize int           // largest client message accepted (close 1009 above it)
	SendQueueBytes int           // unsent bytes per connection before it is cut as slow (close 4008)
	CloseTimeout   time.Duration // how long a closing connection may take to finish the handshake
	Loops          int           // event loops; default one per CPU
	ExpiryNotice   time.Duration // how long before its expiry a connection's ExpiryNotifier hears of it; 0 = never
	Logger         *slog.Logger
}

// DefaultConfig returns the defaults of the notify contract.
func DefaultConfig() Config {
	return Config{
		PingInterval:   25 * time.Second,
		MaxMessageSize: 4096,
		SendQueueBytes: 262144,
		CloseTimeout:   5 * time.Second,
		Loops:          runtime.GOMAXPROCS(0),
	}
}

func (c *Config) setDefaults() {
	d := DefaultConfig()
	if c.PingInterval == 0 {
		c.PingInterval = d.PingInterval
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = d.MaxMessageSize
	}
	if c.SendQueueBytes == 0 {
		c.SendQueueBytes = d.SendQueueBytes
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = d.CloseTimeout
	}
	if c.Loops == 0 {
		c.Loops = d.Loops
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports the first setting out of range.
func (c Config) Validate() error {
	switch {
	case c.PingInterval < time.Millisecond:
		return fmt.Errorf("ping interval %v: must be at least 1ms", c.PingInterval)
	case c.MaxMessageSize < 1 || c.MaxMessageSize > 1<<30:
		return fmt.Errorf("max message size %d: must be 1 to 1073741824", c.MaxMessageSize)
	case c.SendQueueBytes < 1024:
		return fmt.Errorf("send queue %d bytes: must be at least 1024", c.SendQueueBytes)
	case c.CloseTimeout < time.Millisecond:
		return fmt.Errorf("close timeout %v: must be at least 1ms", c.CloseTimeout)
	case c.Loops < 1 || c.Loops > 256:
		return fmt.Errorf("loops %d: must be 1..256", c.Loops)
	case c.ExpiryNotice < 0:
		return fmt.Errorf("expiry notice %v: must not be negative", c.ExpiryNotice)
	}
	return nil
}

// Server drives connections.
type Server struct {
	cfg    Config
	log    *slog.Logger
	loops  []*loop
	next   atomic.Uint32
	closed atomic.Bool
}

// ErrServerClosed is returned by Attach after Close.
var ErrServerClosed = errors.New("transport: server closed")

// NewServer starts the event loops.
func NewServer(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("transport config: %w", err)
	}
	s := &Server{cfg: cfg, log: cfg.Logger}
	for i := 0; i < cfg.Loops; i++ {
		l, err := newLoop(s)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("start event loop: %w", err)
		}
		s.loops = append(s.loops, l)
	}
	return s, nil
}

// CloseTimeout is how long a closing connection may take to finish the
// handshake: Config.CloseTimeout, or its default when that was zero.
func (s *Server) CloseTimeout() time.Duration { return s.cfg.CloseTimeout }

// NewConn makes a connection in the held state: frames sent to it queue up
// (within the send-queue limit) and go out after Attach, behind the frames
// Attach puts first. This is how "register, then read state" keeps order.
// o.Handler must not be nil.
func (s *Server) NewConn(o ConnOptions) *Conn {
	if o.Handler == nil {
		panic("transport: NewConn with a nil ConnOptions.Handler")
	}
	c := &Conn{srv: s, handler: o.Handler, messages: o.Messages, raw: o.Raw}
	if !o.Expiry.IsZero() {
		c.expiry = o.Expiry.UnixNano()
	}
	if _, ok := o.Handler.(ExpiryNotifier); ok && s.cfg.ExpiryNotice > 0 {
		c.notices = true
	}
	return c
}

// Attach takes over nc, an upgraded WebSocket connection (nc is closed or
// owned by the server afterwards), and starts serving c on it. buffered holds
// bytes the client sent after its handshake that were already read. response
// is the HTTP response not yet written (Upgrade's, or a raw stream's head):
// it goes first, in the same write as the first frames, which go before
// anything queued while c was held; a cut as a slow consumer drops queued
// frames but not the response. On error c is closed and its Handler's
// OnClose is not called.
func (s *Server) Attach(c *Conn, nc net.Conn, buffered, response []byte, first ...[]byte) error {
	if s.closed.Load() {
		nc.Close()
		c.markClosed()
		return ErrServerClosed
	}
	l := s.loops[int(s.next.Add(1))%len(s.loops)]
	if err := l.attach(c, nc, buffered, response, first); err != nil {
		c.markClosed()
		return err
	}
	return nil
}

// Relay joins two connections: bytes from a go to b and back, moved by an
// event loop (no goroutine per pair), until both directions end or either
// fails. aBuffered holds bytes already read from a (they go to b first), and
// bBuffered bytes already read from b. onClose runs once, on the loop, when
// both sockets are closed. Both connections are owned by the server
// afterwards, also on error.
func (s *Server) Relay(a net.Conn, aBuffered []byte, b net.Conn, bBuffered []byte, onClose func()) error {
	if s.closed.Load() {
		a.Close()
		b.Close()
		return ErrServerClosed
	}
	l := s.loops[int(s.next.Add(1))%len(s.loops)]
	return l.attachRelay(a, aBuffered, b, bBuffered, onClose)
}

// Close stops the loops and closes every socket at once, without a closing
// handshake (drain connections before, with Conn.Close). Each connection's
// Handler.OnClose runs with CloseGoingAway, and each relay's onClose runs.
func (s *Server) Close() {
	if s.closed.Swap(true) {
		return
	}
	for _, l := range s.loops {
		l.stop()
	}
}

func (c *Conn) markClosed() {
	c.mu.Lock()
	c.state = stateClosed
	c.dropQueueLocked()
	c.mu.Unlock()
}

// prependLocked puts response, then the first frames, in front of
// everything queued while held.
func (c *Conn) prependLocked(response []byte, first [][]byte) {
	n := len(first)
	if len(response) > 0 {
		n++
	}
	if n == 0 {
		return
	}
	q := make([]outFrame, 0, n+len(c.queue))
	if len(response) > 0 {
		q = append(q, outFrame{b: response})
		c.queued += int32(len(response))
		c.pinned = true
	}
	for _, f := range first {
		q = append(q, outFrame{b: f})
		c.queued += int32(len(f))
	}
	c.queue = append(q, c.queue...)
}

// firstPing is how long after registering a connection its first ping is
// due: the ping interval less a random part of up to half of it. The
// connections of a ramp (thousands a second) would otherwise all be
// pinged in the same tick of the wheel, every interval, for as long as
// they live, and answer together: a pause for every delivery of the loop
// (tens of milliseconds at 15,000 connections). Later pings follow one
// interval apart, so they stay spread.
func firstPing(ping int64) int64 {
	if ping < 2 {
		return ping
	}
	return ping - rand.Int64N(ping/2)
}

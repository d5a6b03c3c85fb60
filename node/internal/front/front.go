// Package front serves a node's client listener. A connection whose first
// request is a GET of one of the handshake paths (/notify/ws) is read and
// handed to the handler straight from the accepted socket: one request, which
// the handler hijacks (an upgrade, a relay) or which is answered and closed.
// Every other connection goes to net/http, untouched.
//
// Why: net/http gives each connection a server of its own: a 4 KiB read
// buffer and a 4 KiB write buffer, which it never gets back from a hijacked
// connection, a background read, a cancellable context. For a handshake that
// becomes a WebSocket at once, that is about 60 % of the bytes the handshake
// allocates and an eighth of its CPU. The front parses the request with
// net/http's own parser (http.ReadRequest) into buffers it reuses.
package front

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Config of a Front.
type Config struct {
	Listener net.Listener
	// Paths are the handshake paths, exactly as the request line has them
	// before any query ("/notify/ws"). A GET of one takes the direct route.
	Paths []string
	// Server serves every other connection. Its Handler also serves the
	// direct route's requests (they are routed as net/http would route
	// them); its ReadHeaderTimeout and MaxHeaderBytes bound their heads too,
	// and its ErrorLog gets nothing from the front (it logs to Logger).
	Server *http.Server
	// StopTimeout bounds how long Run's stop waits for the handshakes and
	// requests in flight; then their connections are closed.
	StopTimeout time.Duration
	// ServerIdle is how long a server goroutine, its connection served,
	// waits for another before it ends (see Front.idle).
	ServerIdle time.Duration
	Logger     *slog.Logger
}

// Defaults for what Config leaves zero (net/http's for the head).
const (
	defaultHeaderTimeout  = 10 * time.Second
	defaultMaxHeaderBytes = http.DefaultMaxHeaderBytes
	defaultStopTimeout    = 5 * time.Second
	// DefaultServerIdle is long enough to carry a server goroutine through
	// a storm's gaps, short enough that none is left a few seconds after.
	DefaultServerIdle = time.Second
)

func (c *Config) validate() error {
	switch {
	case c.Listener == nil:
		return errors.New("front: Listener is required")
	case c.Server == nil || c.Server.Handler == nil:
		return errors.New("front: Server with a Handler is required")
	}
	for _, p := range c.Paths {
		if len(p) < 2 || p[0] != '/' || len(p) > maxPath {
			return fmt.Errorf("front: path %q: want an absolute path of at most %d bytes", p, maxPath)
		}
	}
	return nil
}

// Front serves a listener; see the package comment.
type Front struct {
	cfg           Config
	log           *slog.Logger
	headerTimeout time.Duration
	maxHead       int
	slow          *handOff // net/http's listener
	pools         pools

	// The connections in the front's hands: true once a direct request is
	// being served, false while the first bytes are awaited. A stop closes
	// the waiting ones at once, the others when it runs out of time.
	mu       sync.Mutex
	held     map[net.Conn]bool
	stopping bool
	wg       sync.WaitGroup // one per connection in held

	// Server goroutines outlive the connection they were started for: an
	// idle one takes the next accepted connection from idle, and ends
	// after ServerIdle without one, or when quit is closed. A new
	// goroutine's stack grows to the handshake's depth by copying itself
	// (6 % of the node's CPU in a handshake storm); a reused one has grown.
	idle    chan net.Conn
	quit    chan struct{}
	servers sync.WaitGroup
}

// New returns a front; Run serves it.
func New(cfg Config) (*Front, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	f := &Front{cfg: cfg, log: cfg.Logger, held: make(map[net.Conn]bool),
		idle: make(chan net.Conn), quit: make(chan struct{}),
		headerTimeout: cfg.Server.ReadHeaderTimeout, maxHead: cfg.Server.MaxHeaderBytes}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if f.headerTimeout <= 0 {
		f.headerTimeout = cfg.Server.ReadTimeout
	}
	if f.headerTimeout <= 0 {
		f.headerTimeout = defaultHeaderTimeout
	}
	if f.maxHead <= 0 {
		f.maxHead = defaultMaxHeaderBytes
	}
	if f.cfg.StopTimeout <= 0 {
		f.cfg.StopTimeout = defaultStopTimeout
	}
	if f.cfg.ServerIdle <= 0 {
		f.cfg.ServerIdle = DefaultServerIdle
	}
	f.slow = newHandOff(cfg.Listener.Addr())
	return f, nil
}

// Run serves until ctx ends. Then it stops accepting, lets the handshakes in
// flight and net/http's requests finish (StopTimeout), closes what is left
// and returns.
func (f *Front) Run(ctx context.Context) error {
	served := make(chan error, 1)
	go func() { served <- f.cfg.Server.Serve(f.slow) }()
	// base is the direct route's requests' context: it outlives ctx by the
	// stop's grace period.
	base, cancelBase := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBase()
	accepted := make(chan error, 1)
	go func() { accepted <- f.accept(base) }()

	var err error
	var acceptEnded, serveEnded bool
	select {
	case aerr := <-accepted: // the listener failed, or was closed by someone else
		acceptEnded = true
		err = fmt.Errorf("accept %s: %w", f.cfg.Listener.Addr(), cmp.Or(aerr, net.ErrClosed))
	case serr := <-served:
		serveEnded = true
		err = fmt.Errorf("serve %s: %w", f.cfg.Listener.Addr(), serr)
	case <-ctx.Done():
	}
	f.cfg.Listener.Close()
	if !acceptEnded {
		if aerr := <-accepted; aerr != nil && err == nil {
			err = fmt.Errorf("accept %s: %w", f.cfg.Listener.Addr(), aerr)
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), f.cfg.StopTimeout)
	defer cancel()
	f.closeHeld(false)
	if !f.waitHeld(sctx) {
		cancelBase()
		f.closeHeld(true)
		f.wg.Wait()
	}
	// Every connection the front held is served or handed over by now, and
	// accept has ended: no server goroutine gets another.
	close(f.quit)
	f.servers.Wait()
	if serr := f.cfg.Server.Shutdown(sctx); serr != nil {
		err = errors.Join(err, serr, f.cfg.Server.Close())
	}
	if !serveEnded {
		if serr := <-served; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
	}
	return err
}

// accept takes the listener's connections until it is closed; each is
// given to an idle server goroutine, or to a new one. f.wg counts the
// connections, f.servers the goroutines.
func (f *Front) accept(base context.Context) error {
	for {
		nc, err := f.cfg.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		f.wg.Add(1)
		f.hold(nc)
		select {
		case f.idle <- nc:
		default:
			f.servers.Add(1)
			go f.server(base, nc)
		}
	}
}

// server serves nc, then the connections accept gives it while it is idle,
// until it has waited ServerIdle for one or the front stops.
func (f *Front) server(base context.Context, nc net.Conn) {
	defer f.servers.Done()
	idle := time.NewTimer(f.cfg.ServerIdle)
	defer idle.Stop()
	for {
		f.serve(base, nc)
		idle.Reset(f.cfg.ServerIdle) // since Go 1.23 no stale tick survives a Reset
		select {
		case nc = <-f.idle:
		case <-idle.C:
			return
		case <-f.quit:
			return
		}
	}
}

// serve routes one accepted connection.
func (f *Front) serve(base context.Context, nc net.Conn) {
	defer f.wg.Done()
	defer f.release(nc)
	// The head's deadline; net/http sets its own, the direct route clears
	// it once the head is read.
	_ = nc.SetReadDeadline(time.Now().Add(f.headerTimeout))
	switch peekRoute(nc, f.cfg.Paths) {
	case routeDirect:
		if f.serving(nc) {
			f.serveDirect(base, nc)
		}
	case routeHTTP:
		f.release(nc)
		if !f.slow.push(nc) {
			nc.Close() // net/http has stopped
		}
	default: // closed, timed out or failed before a request line
		nc.Close()
	}
}

// hold records nc, just accepted, as held while its first bytes are
// awaited.
func (f *Front) hold(nc net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.held[nc] = false
}

// serving marks nc as serving a direct request; false: a stop closed it
// while its first bytes were awaited.
func (f *Front) serving(nc net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.held[nc]; !ok {
		return false
	}
	f.held[nc] = true
	return true
}

func (f *Front) release(nc net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.held, nc)
}

// closeHeld closes the held connections that are serving a request (all)
// or only those whose first bytes are still awaited (and stops holding
// new ones).
func (f *Front) closeHeld(all bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopping = true
	for nc, serving := range f.held {
		if all || !serving {
			nc.Close()
			delete(f.held, nc)
		}
	}
}

// waitHeld waits for the connections in the front's hands to be served or
// handed over, or reports false when ctx ends first.
func (f *Front) waitHeld(ctx context.Context) bool {
	done := make(chan struct{})
	go func() {
		f.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

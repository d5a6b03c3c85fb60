package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"google.golang.org/grpc"

	"github.com/notify-dev/notify/api"
	"github.com/notify-dev/notify/internal/service"
	"github.com/notify-dev/notify/node/internal/front"
)

// stopTimeout bounds how long a listener's server waits for its requests
// in flight when the node stops (connections were drained before).
const stopTimeout = 5 * time.Second

// defaultHeaderTimeout bounds how long PORT waits for a request's header:
// a connection that sends half a request line and then nothing (slowloris)
// costs a goroutine and its buffers until then, and is closed.
const defaultHeaderTimeout = 10 * time.Second

// listeners are the node's bound sockets: HTTP (clients, API, health,
// pages; metrics and the cluster's endpoints too without INTERNAL_PORT),
// internal (metrics, /cluster, node-to-node, pprof), pprof and gRPC (nil
// when off or unset).
type listeners struct {
	http, internal, pprof, grpc net.Listener

	headerTimeout time.Duration // PORT's ReadHeaderTimeout
}

// listen binds every listener, or none.
func (n *Node) listen() (*listeners, error) {
	ls := &listeners{headerTimeout: cmp.Or(n.cfg.HeaderTimeout, defaultHeaderTimeout)}
	bind := []struct {
		setting, value string
		ln             *net.Listener
	}{
		{"PORT", n.cfg.Port, &ls.http},
		{"INTERNAL_PORT", n.cfg.InternalPort, &ls.internal},
		{"PPROF_PORT", n.cfg.pprofAddr(), &ls.pprof},
		{"GRPC_PORT", n.cfg.GRPCPort, &ls.grpc},
	}
	lc := listenConfig()
	for _, b := range bind {
		if b.value == "off" || b.value == "" {
			continue
		}
		addr, _ := normalizeAddr(b.value) // checked by Validate
		ln, err := lc.Listen(context.Background(), "tcp", addr)
		if err != nil {
			ls.close()
			return nil, fmt.Errorf("listen %s %s: %w", b.setting, b.value, err)
		}
		*b.ln = guardAccept(ln, b.setting, n.log, n.accepts)
	}
	return ls, nil
}

// relayPort is the port peers relay clients to: the HTTP listener's.
func (ls *listeners) relayPort() int { return ls.http.Addr().(*net.TCPAddr).Port }

// internalPort is the port peers call the internal endpoints on: the
// internal listener's, else the HTTP listener's, which serves them then.
func (ls *listeners) internalPort() int {
	if ls.internal == nil {
		return ls.relayPort()
	}
	return ls.internal.Addr().(*net.TCPAddr).Port
}

func (ls *listeners) close() {
	for _, ln := range []net.Listener{ls.http, ls.internal, ls.pprof, ls.grpc} {
		if ln != nil {
			ln.Close()
		}
	}
}

// httpService serves h on PORT: WebSocket handshakes (/notify/ws and
// Phoenix's /pubsub/websocket) through the front's direct route, everything
// else through net/http.
func (ls *listeners) httpService(h http.Handler, log *slog.Logger) service.Service {
	f, err := front.New(front.Config{
		Listener: ls.http,
		Paths:    []string{"/notify/ws", "/pubsub/websocket"},
		Server: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: ls.headerTimeout,
			IdleTimeout:       90 * time.Second,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		},
		StopTimeout: stopTimeout,
		Logger:      log,
	})
	if err != nil { // the configuration above is valid: cannot happen
		return service.Func(func(context.Context) error { return fmt.Errorf("PORT: %w", err) })
	}
	return f
}

// internalService serves h on INTERNAL_PORT; idle when it is unset (h is
// then part of the HTTP listener's routes).
func (ls *listeners) internalService(h http.Handler, log *slog.Logger) service.Service {
	if ls.internal == nil {
		return idle
	}
	return serveHTTP(&http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}, ls.internal)
}

func (ls *listeners) pprofService(log *slog.Logger) service.Service {
	if ls.pprof == nil {
		return idle
	}
	mux := http.NewServeMux()
	handlePprof(mux)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	return serveHTTP(&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}, ls.pprof)
}

// handlePprof adds pprof's handlers but cmdline to mux. cmdline is left to
// PPROF_PORT's own listener: the command line may carry secrets given as
// flags (--notify-jwt-secret), and the internal listener is reachable from
// other hosts; /debug/pprof/cmdline there is an unknown profile (404).
func handlePprof(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}

// idle is the service of a listener that is off.
var idle = service.Func(func(ctx context.Context) error {
	<-ctx.Done()
	return nil
})

// serveHTTP serves srv on ln until ctx ends, then shuts it down: requests
// in flight get stopTimeout to finish, then their connections are closed.
func serveHTTP(srv *http.Server, ln net.Listener) service.Service {
	return service.Func(func(ctx context.Context) error {
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		select {
		case err := <-served:
			return fmt.Errorf("serve %s: %w", ln.Addr(), err)
		case <-ctx.Done():
		}
		sctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		err := srv.Shutdown(sctx)
		if err != nil {
			err = errors.Join(err, srv.Close())
		}
		if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
		return err
	})
}

func (ls *listeners) grpcService(a *api.Server, log *slog.Logger) service.Service {
	if ls.grpc == nil {
		return idle
	}
	srv := a.GRPCServer()
	return service.Func(func(ctx context.Context) error {
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ls.grpc) }()
		select {
		case err := <-served:
			return fmt.Errorf("serve gRPC %s: %w", ls.grpc.Addr(), err)
		case <-ctx.Done():
		}
		stopped := make(chan struct{})
		go func() {
			srv.GracefulStop()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-time.After(stopTimeout):
			log.Warn("gRPC calls still running at stop; cancelling them")
			srv.Stop()
			<-stopped
		}
		if err := <-served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return err
		}
		return nil
	})
}

package node

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The wait between Accepts while the process is out of descriptors: short
// at first (the next close frees one), doubling, never over a second (a
// client queued meanwhile waits at most that long once one is free).
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// Reasons of notify_accept_errors_total.
const (
	acceptEMFILE = "emfile" // the process's open files limit
	acceptENFILE = "enfile" // the system's
)

// acceptMetrics are the listeners' descriptor shortages.
type acceptMetrics struct {
	errors map[string]prometheus.Counter // by reason
	paused prometheus.Gauge
}

func newAcceptMetrics(reg prometheus.Registerer) (*acceptMetrics, error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_accept_errors_total",
		Help: "Accepts that failed for want of a file descriptor, by reason (emfile: the process's limit, enfile: the system's); each is retried after a backoff.",
	}, []string{"reason"})
	paused := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "notify_accept_paused",
		Help: "Listeners waiting for a file descriptor to accept their next connection.",
	})
	m := &acceptMetrics{errors: map[string]prometheus.Counter{}, paused: paused}
	for _, r := range []string{acceptEMFILE, acceptENFILE} {
		m.errors[r] = vec.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{vec, paused} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// guardedListener is a listener whose Accept waits out a shortage of file
// descriptors (EMFILE, ENFILE) instead of returning it. The connection
// stays in the kernel's queue, the wait doubles up to a second, and the
// episode is logged twice: a warning when it starts, a line when accepting
// resumes. net/http's and gRPC's own retries would log every attempt, and a
// listener that returned at once would spin: the queued connection makes
// the socket readable again immediately.
type guardedListener struct {
	net.Listener
	setting string // the listener's setting, for the logs
	log     *slog.Logger
	m       *acceptMetrics
	// wait pauses for d, or returns false at once when the listener is
	// closed (tests replace it).
	wait      func(d time.Duration) bool
	closed    chan struct{}
	closeOnce sync.Once
}

func guardAccept(ln net.Listener, setting string, log *slog.Logger, m *acceptMetrics) *guardedListener {
	l := &guardedListener{Listener: ln, setting: setting, log: log, m: m, closed: make(chan struct{})}
	l.wait = l.sleep
	return l
}

// Accept returns the next connection, waiting while there is no descriptor
// for it; any other error is returned as it is.
func (l *guardedListener) Accept() (net.Conn, error) {
	var (
		retries int
		start   time.Time
		backoff = acceptBackoffMin
	)
	for {
		c, err := l.Listener.Accept()
		reason := shortage(err)
		if reason == "" {
			if retries > 0 {
				l.m.paused.Dec()
				if err == nil {
					l.log.Info("file descriptors available again: accepting resumed", "listener", l.setting,
						"paused", time.Since(start).Round(time.Millisecond).String(), "retries", retries)
				}
			}
			return c, err
		}
		l.m.errors[reason].Inc()
		if retries == 0 {
			start = time.Now()
			l.m.paused.Inc()
			l.log.Warn("out of file descriptors: accepting paused", "listener", l.setting, "reason", reason, "err", err)
		}
		retries++
		if !l.wait(backoff) {
			continue // closed: the next Accept says so
		}
		backoff = min(2*backoff, acceptBackoffMax)
	}
}

// shortage names the descriptor shortage err is, or "".
func shortage(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, syscall.EMFILE):
		return acceptEMFILE
	case errors.Is(err, syscall.ENFILE):
		return acceptENFILE
	}
	return ""
}

func (l *guardedListener) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.closed:
		return false
	}
}

// Close ends a wait in Accept, then closes the listener.
func (l *guardedListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

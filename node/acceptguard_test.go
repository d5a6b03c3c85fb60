package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// scriptedListener answers Accept with its script, one entry per call: an
// error, or (nil) a connection.
type scriptedListener struct {
	net.Listener
	script []error
	calls  int
}

func (l *scriptedListener) Accept() (net.Conn, error) {
	if l.calls >= len(l.script) {
		return nil, net.ErrClosed
	}
	err := l.script[l.calls]
	l.calls++
	if err != nil {
		return nil, err
	}
	c, _ := net.Pipe()
	return c, nil
}

func (l *scriptedListener) Close() error { return nil }

// acceptErr is an Accept error as the net package returns it.
func acceptErr(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
}

func repeatErr(err error, n int) []error { return slices.Repeat([]error{err}, n) }

func TestGuardedListener(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		var d []time.Duration
		for _, v := range n {
			d = append(d, time.Duration(v)*time.Millisecond)
		}
		return d
	}
	other := errors.New("some other failure")
	tests := []struct {
		name     string
		script   []error
		wantErr  error           // of the one Accept
		waits    []time.Duration // asked of wait, in order
		counted  map[string]float64
		wantLogs []string // "LEVEL msg retries"
	}{
		{"no shortage", []error{nil}, nil, nil, nil, nil},
		{"other errors are returned", []error{other}, other, nil, nil, nil},
		{"emfile, then a connection", append(repeatErr(acceptErr(syscall.EMFILE), 3), nil), nil, ms(5, 10, 20),
			map[string]float64{acceptEMFILE: 3},
			[]string{"WARN out of file descriptors: accepting paused", "INFO file descriptors available again: accepting resumed 3"}},
		{"the wait doubles to a second", append(repeatErr(acceptErr(syscall.ENFILE), 10), nil), nil,
			ms(5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000), map[string]float64{acceptENFILE: 10},
			[]string{"WARN out of file descriptors: accepting paused", "INFO file descriptors available again: accepting resumed 10"}},
		{"closed after a shortage", repeatErr(acceptErr(syscall.EMFILE), 2), net.ErrClosed, ms(5, 10),
			map[string]float64{acceptEMFILE: 2}, []string{"WARN out of file descriptors: accepting paused"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			m, err := newAcceptMetrics(prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			l := guardAccept(&scriptedListener{script: tt.script}, "PORT", slog.New(slog.NewJSONHandler(&logs, nil)), m)
			var waits []time.Duration
			l.wait = func(d time.Duration) bool { waits = append(waits, d); return true }
			c, err := l.Accept()
			if !errors.Is(err, tt.wantErr) || (err == nil) != (c != nil) {
				t.Fatalf("Accept: %v %v, want %v", c, err, tt.wantErr)
			}
			if c != nil {
				c.Close()
			}
			if !slices.Equal(waits, tt.waits) {
				t.Errorf("waits %v, want %v", waits, tt.waits)
			}
			checkAcceptMetrics(t, m, tt.counted)
			if got := logLines(t, &logs); !slices.Equal(got, tt.wantLogs) {
				t.Errorf("logs %q, want %q", got, tt.wantLogs)
			}
		})
	}
}

func checkAcceptMetrics(t *testing.T, m *acceptMetrics, want map[string]float64) {
	t.Helper()
	for _, r := range []string{acceptEMFILE, acceptENFILE} {
		if got := testutil.ToFloat64(m.errors[r]); got != want[r] {
			t.Errorf("notify_accept_errors_total{reason=%q} %v, want %v", r, got, want[r])
		}
	}
	if got := testutil.ToFloat64(m.paused); got != 0 {
		t.Errorf("notify_accept_paused %v after Accept returned", got)
	}
}

// logLines returns each JSON log line as "LEVEL msg[ retries]".
func logLines(t *testing.T, logs *bytes.Buffer) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if line == "" {
			continue
		}
		var rec struct {
			Level, Msg, Listener string
			Retries              *int
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Listener != "PORT" {
			t.Fatalf("log line %s: %v, want one naming the listener", line, err)
		}
		s := rec.Level + " " + rec.Msg
		if rec.Retries != nil {
			s += " " + strconv.Itoa(*rec.Retries)
		}
		out = append(out, s)
	}
	return out
}

// TestGuardedListenerCloseEndsTheWait: a listener closed while it waits
// for a descriptor returns at once, not after its backoff.
func TestGuardedListenerCloseEndsTheWait(t *testing.T) {
	m, err := newAcceptMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	l := guardAccept(&scriptedListener{script: repeatErr(acceptErr(syscall.EMFILE), 1)}, "PORT", slog.New(slog.DiscardHandler), m)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if l.sleep(time.Hour) {
		t.Fatal("a closed listener's wait did not end")
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
}

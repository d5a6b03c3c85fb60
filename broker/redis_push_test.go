package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notify-dev/notify/internal/redistest"
)

// TestPushConnProtocols: with go-redis speaking RESP2 and RESP3, in both
// subscribe modes, what applications publish reaches the Handler whole
// (payloads with CRLF, binary, empty, 1 MiB), the control channel's
// messages still go through go-redis, and the probes keep the broker
// ready.
func TestPushConnProtocols(t *testing.T) {
	s := redistest.Start(t)
	big := strings.Repeat("0123456789abcdef", 1<<16)
	for _, proto := range []int{2, 3} {
		for _, mode := range []SubscribeMode{SubscribePattern, SubscribeUser} {
			t.Run(fmt.Sprintf("resp%d_%s", proto, mode), func(t *testing.T) {
				r, err := NewRedis(&redis.Options{Addr: s.Addr, Protocol: proto}, RedisOptions{
					Subscribe: mode, ProbeInterval: testProbeInterval, ProbeTimeout: testProbeTimeout,
					Logger: testLogger(t), NodeID: "push" + string(mode),
				})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = r.Close() })
				rec := runReady(t, r)
				targets := []Target{{Name: "a"}, {Name: ""}, {Topic: true, Name: "t"}}
				for _, tg := range targets {
					r.Want(tg)
				}
				ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
				defer cancel()
				if err := r.Await(ctx, targets...); err != nil {
					t.Fatal(err)
				}
				want := []msg{
					{"notify:a", "line\r\nbreak"}, {"notify:a", "\x00\xff*3\r\n$7\r\nmessage\r\n"}, {"notify:a", ""},
					{"notify:", "nobody"}, {"notify_topic:t", "topic"}, {ControlChannel, "ctl"}, {"notify:a", big},
				}
				c := s.Client(t)
				for _, m := range want {
					if err := c.Publish(ctx, m.channel, m.payload).Err(); err != nil {
						t.Fatal(err)
					}
				}
				rec.expect(t, want...)
				rec.expectNothing(t)
				if err := r.Ready(); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// A stream of frames as Redis sends them on a subscribed connection, and
// what pushConn makes of it: the messages it delivers, what it passes on.
var pushStream = []struct {
	frame   string
	deliver *msg // nil: passed on to go-redis
}{
	{"%7\r\n+server\r\n+redis\r\n+version\r\n+7.0.15\r\n+proto\r\n:3\r\n+id\r\n:5\r\n+mode\r\n+standalone\r\n+role\r\n+master\r\n+modules\r\n*0\r\n", nil},
	{"+OK\r\n", nil},
	{">3\r\n$10\r\npsubscribe\r\n$8\r\nnotify:*\r\n:1\r\n", nil},
	{">4\r\n$8\r\npmessage\r\n$8\r\nnotify:*\r\n$8\r\nnotify:a\r\n$5\r\nhello\r\n", &msg{"notify:a", "hello"}},
	{">4\r\n$8\r\npmessage\r\n$14\r\nnotify_topic:*\r\n$14\r\nnotify_topic:t\r\n$0\r\n\r\n", &msg{"notify_topic:t", ""}},
	{">4\r\n$8\r\npmessage\r\n$3\r\nfoo\r\n$8\r\nnotify:a\r\n$1\r\nx\r\n", nil}, // not our pattern
	{">3\r\n$7\r\nmessage\r\n$14\r\nnotify_control\r\n$3\r\nctl\r\n", nil},
	{"*3\r\n$7\r\nmessage\r\n$8\r\nnotify:b\r\n$4\r\n\r\n\r\n\r\n", &msg{"notify:b", "\r\n\r\n"}},
	{"*3\r\n$8\r\nsmessage\r\n$7\r\nnotify:\r\n$2\r\nno\r\n", &msg{"notify:", "no"}},
	{"*3\r\n$8\r\nsmessage\r\n$5\r\nother\r\n$2\r\nno\r\n", nil},
	{"*2\r\n$4\r\npong\r\n$0\r\n\r\n", nil},
	{"-MOVED 1 127.0.0.1:7001\r\n", nil},
	{"|1\r\n+ttl\r\n:3\r\n$-1\r\n", nil},
	{"~2\r\n,1.5\r\n#t\r\n", nil},
	{"=9\r\ntxt:hello\r\n", nil},
	{"(12345678901234567890\r\n", nil},
	{"_\r\n", nil},
	{"*-1\r\n", nil},
	{">3\r\n$7\r\nmessage\r\n$8\r\nnotify:c\r\n$3\r\nend\r\n", &msg{"notify:c", "end"}},
}

func TestPushConnSplits(t *testing.T) {
	var stream, pass bytes.Buffer
	var want []msg
	for _, f := range pushStream {
		stream.WriteString(f.frame)
		if f.deliver != nil {
			want = append(want, *f.deliver)
		} else {
			pass.WriteString(f.frame)
		}
	}
	for _, chunk := range []int{1, 2, 3, 7, 64, 1 << 20} {
		t.Run(fmt.Sprint(chunk), func(t *testing.T) {
			got, passed, err := readPush(t, stream.Bytes(), chunk)
			if !errors.Is(err, io.EOF) {
				t.Fatalf("err = %v, want EOF", err)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("delivered %q\nwant %q", got, want)
			}
			if !bytes.Equal(passed, pass.Bytes()) {
				t.Fatalf("passed on %q\nwant %q", passed, pass.Bytes())
			}
		})
	}
}

func TestFrameEndRefuses(t *testing.T) {
	for _, s := range []string{
		"?x\r\n", "+no cr\n", "$x\r\n", "$-2\r\n", "$3\r\nabcd\r\n", "*x\r\n", "*-2\r\n",
		"$99999999999\r\n", "*2147483647\r\n*2147483647\r\n", "$1073741824\r\n",
	} {
		if n, err := frameEnd([]byte(s)); !errors.Is(err, errPushProtocol) {
			t.Errorf("frameEnd(%q) = %d, %v; want a protocol error", s, n, err)
		}
	}
	for _, s := range []string{"", "+OK", "+OK\r", "$5\r\nab", "*2\r\n$1\r\na\r\n", "%1\r\n+k\r\n"} {
		if n, err := frameEnd([]byte(s)); n != -1 || err != nil {
			t.Errorf("frameEnd(%q) = %d, %v; want -1 (incomplete)", s, n, err)
		}
	}
}

// TestPushConnAllocs: a message costs no allocation: the Handler gets
// views of the read buffer, and a stream's epoch is copied once.
func TestPushConnAllocs(t *testing.T) {
	history := encodeMessage(Message{Payload: strings.Repeat("p", 100), Cursor: Cursor{Epoch: "1700000000000-0", Seq: 42}})
	for _, tc := range []struct{ name, payload string }{
		{"plain", strings.Repeat("p", 100)},
		{"history", history},
	} {
		t.Run(tc.name, func(t *testing.T) {
			frame := []byte(fmt.Sprintf(">4\r\n$8\r\npmessage\r\n$8\r\nnotify:*\r\n$12\r\nnotify:12345\r\n$%d\r\n%s\r\n", len(tc.payload), tc.payload))
			burst := bytes.Repeat(frame, 100)
			src := &replayConn{data: burst}
			c := &pushConn{Conn: src, tap: &pushTap{h: nopHandler{}}}
			p := make([]byte, 4096)
			allocs := testing.AllocsPerRun(50, func() {
				src.off = 0
				if _, err := c.Read(p); !errors.Is(err, io.EOF) {
					t.Fatal(err)
				}
			})
			if allocs > 0 {
				t.Fatalf("%.1f allocations for 100 messages, want none", allocs)
			}
			if got := c.tap.taken.Load(); got != 51*100 {
				t.Fatalf("taken = %d, want %d", got, 51*100)
			}
		})
	}
}

// FuzzPushConn: any stream is read without a panic, and the same way
// whatever the socket's reads cut it into: the same messages delivered,
// the same bytes passed on, an error or not.
func FuzzPushConn(f *testing.F) {
	for _, fr := range pushStream {
		f.Add([]byte(fr.frame), uint8(3))
	}
	f.Add([]byte("*3\r\n$7\r\nmessage\r\n$8\r\nnotify:a\r\n$3\r\nabc\r\n*3\r\n$7\r\nmessage"), uint8(5))
	f.Add([]byte(">4\r\n$8\r\npmessage\r\n$8\r\nnotify:*\r\n$8\r\nnotify:a\r\n$9\r\nhello\r\n"), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		whole, wholePass, wholeErr := readPush(t, data, len(data)+1)
		got, pass, err := readPush(t, data, int(chunk%16)+1)
		if fmt.Sprint(got) != fmt.Sprint(whole) || !bytes.Equal(pass, wholePass) {
			t.Fatalf("in chunks of %d: %q / %q; whole: %q / %q", chunk%16+1, got, pass, whole, wholePass)
		}
		if errors.Is(err, io.EOF) != errors.Is(wholeErr, io.EOF) {
			t.Fatalf("in chunks: %v; whole: %v", err, wholeErr)
		}
	})
}

// readPush reads data through a pushConn whose socket returns at most
// chunk bytes a read, as go-redis does, until an error: what it delivered,
// what it passed on.
func readPush(t testing.TB, data []byte, chunk int) ([]msg, []byte, error) {
	t.Helper()
	rec := newRecorder(t)
	c := &pushConn{Conn: &replayConn{data: data, chunk: chunk}, tap: &pushTap{h: rec}}
	var passed []byte
	p := make([]byte, 5)
	var err error
	for {
		var n int
		n, err = c.Read(p)
		passed = append(passed, p[:n]...)
		if err != nil {
			break
		}
	}
	var got []msg
	for len(rec.ch) > 0 {
		got = append(got, <-rec.ch)
	}
	return got, passed, err
}

// replayConn is a socket that has received data and then closed: each Read
// returns at most chunk bytes of it (all when chunk is 0), then io.EOF.
type replayConn struct {
	net.Conn
	data  []byte
	off   int
	chunk int
}

func (c *replayConn) Read(p []byte) (int, error) {
	if c.off == len(c.data) {
		return 0, io.EOF
	}
	n := len(c.data) - c.off
	if c.chunk > 0 {
		n = min(n, c.chunk)
	}
	n = copy(p, c.data[c.off:c.off+n])
	c.off += n
	return n, nil
}

func (c *replayConn) SetReadDeadline(time.Time) error { return nil }

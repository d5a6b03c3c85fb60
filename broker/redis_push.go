package broker

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"unsafe"
)

// The broker's own reader of a pub/sub connection's messages (pushConn).
//
// go-redis parses every message of a subscription into a *Message with
// three strings, through an []interface{} reply: reading the messages here
// instead halved what one per-user delivery allocates (544 -> 273 bytes in
// make bench, issue 13), and handing the Handler views of the read buffer
// (valid during Deliver, as Handler documents) took the rest of the
// message's share. pushConn sits between the socket and go-redis: it
// finds the RESP frames in what it reads, hands the messages of user and
// topic channels to the Handler itself, and passes every other frame
// (subscription confirmations, PONGs, errors, the HELLO reply, the probe
// and control channels' messages) on to go-redis byte for byte. go-redis stays the client:
// dialing, commands, reconnecting and everything the session reads.

// maxPushFrame bounds one frame pushConn buffers: Redis's own
// proto-max-bulk-len (512 MiB) plus room for the frame's header. A longer
// frame ends the connection rather than the node's memory.
const maxPushFrame = 512<<20 + 4096

// pushReadSize is how much pushConn asks of the socket at least per read:
// go-redis's own read buffer size.
const pushReadSize = 32 << 10

// maxKeptBuffer is the largest read buffer pushConn keeps once empty.
const maxKeptBuffer = 1 << 20

var errPushProtocol = errors.New("redis protocol error on the subscription")

// pushTap is what the subscription connections of one session share with
// it: the Handler the messages go to and how many went, which the session
// counts as the connection's activity (its silence check), since go-redis
// no longer sees them.
type pushTap struct {
	h     Handler
	taken atomic.Uint64
}

// tookSince reports whether messages were delivered since *seen was
// taken, and updates it.
func (t *pushTap) tookSince(seen *uint64) bool {
	n := t.taken.Load()
	if n == *seen {
		return false
	}
	*seen = n
	return true
}

// pushConn reads the subscription's socket for go-redis (Read), taking the
// user and topic messages out of the stream on the way.
type pushConn struct {
	net.Conn
	tap  *pushTap
	read func(p []byte) (int, error) // rawReader's, or nil: Conn.Read

	in   []byte // read from the socket, not yet parsed: in[off:]
	off  int
	pass []byte // whole frames for go-redis: pass[passOff:]
	// passOff is how much of pass go-redis has read.
	passOff int
	err     error // the socket's error, returned once what came before it is parsed
	bad     error // a protocol error: the stream cannot be read on
	// The last epoch and event delivered, kept as strings of their own:
	// the Handler may keep a message's cursor and event, and a stream's
	// messages all carry the same epoch.
	epoch, event string
}

// Read gives go-redis the next frames that are not user or topic messages,
// delivering those that come before them. Before it would wait for the
// socket it calls the Handler's Flush: the messages that arrived together
// have all been delivered.
func (c *pushConn) Read(p []byte) (int, error) {
	for {
		if c.passOff < len(c.pass) {
			n := copy(p, c.pass[c.passOff:])
			c.passOff += n
			if c.passOff == len(c.pass) {
				c.pass, c.passOff = c.pass[:0], 0
			}
			return n, nil
		}
		if c.bad != nil {
			return 0, c.bad
		}
		if err := c.parse(); err != nil {
			c.bad = err // after the frames before it
			continue
		}
		if len(c.pass) > 0 {
			continue
		}
		if c.err != nil {
			err := c.err
			c.err = nil
			return 0, err
		}
		flush(c.tap.h)
		if err := c.fill(); err != nil {
			return 0, err
		}
	}
}

// fill reads the socket once into in, after what is still unparsed.
func (c *pushConn) fill() error {
	if c.off > 0 {
		c.in = c.in[:copy(c.in, c.in[c.off:])]
		c.off = 0
	}
	if len(c.in) >= maxPushFrame {
		return fmt.Errorf("%w: a frame longer than %d bytes", errPushProtocol, maxPushFrame)
	}
	if cap(c.in)-len(c.in) < pushReadSize/8 { // a frame longer than what is left
		grown := make([]byte, len(c.in), 2*cap(c.in)+pushReadSize)
		copy(grown, c.in)
		c.in = grown
	}
	var n int
	var err error
	if c.read != nil {
		n, err = c.read(c.in[len(c.in):cap(c.in)])
	} else {
		n, err = c.Conn.Read(c.in[len(c.in):cap(c.in)])
	}
	c.in = c.in[:len(c.in)+n]
	if err != nil && n > 0 {
		c.err = err // after what came with it
		return nil
	}
	return err
}

// parse goes through the whole frames in in: messages to the Handler,
// until a frame for go-redis, which goes to pass and ends the call.
func (c *pushConn) parse() error {
	taken := uint64(0)
	defer func() {
		if taken > 0 {
			c.tap.taken.Add(taken)
		}
	}()
	for c.off < len(c.in) {
		b := c.in[c.off:]
		end, err := frameEnd(b)
		if err != nil {
			return err
		}
		if end < 0 {
			return nil // the rest has yet to arrive
		}
		if t, m, ok := pushMessage(b[:end]); ok {
			m.Cursor.Epoch = keep(&c.epoch, m.Cursor.Epoch)
			m.Event = keep(&c.event, m.Event)
			c.tap.h.Deliver(t, m) // t.Name and m.Payload are views of in
			taken++
		} else {
			// go-redis reads this frame before the messages after it are
			// delivered: a control message keeps its place among them.
			c.pass = append(c.pass, b[:end]...)
			c.off += end
			return nil
		}
		c.off += end
	}
	c.in, c.off = c.in[:0], 0
	if cap(c.in) > maxKeptBuffer {
		c.in = nil // a long frame's buffer is not kept for the short ones
	}
	return nil
}

// keep returns s as a string of its own: *last when equal (no copy), else
// a copy, which becomes *last.
func keep(last *string, s string) string {
	if s != *last {
		*last = strings.Clone(s)
	}
	return *last
}

// pushMessage reads frame as a message of a user's or a topic's channel:
// "message" or "smessage" (a channel's) or "pmessage" of UserPattern or
// TopicPattern, as a RESP2 array or a RESP3 push. Anything else is not
// ok and goes to go-redis. What it returns are views of frame.
func pushMessage(frame []byte) (Target, Message, bool) {
	if len(frame) < 4 || (frame[0] != '*' && frame[0] != '>') {
		return Target{}, Message{}, false
	}
	var n int
	switch {
	case bytes.HasPrefix(frame[1:], []byte("3\r\n")):
		n = 3
	case bytes.HasPrefix(frame[1:], []byte("4\r\n")):
		n = 4
	default:
		return Target{}, Message{}, false
	}
	i := 4
	kind, i, ok := bulkAt(frame, i)
	if !ok {
		return Target{}, Message{}, false
	}
	switch {
	case n == 3 && (string(kind) == "message" || string(kind) == "smessage"):
	case n == 4 && string(kind) == "pmessage":
		var pattern []byte
		if pattern, i, ok = bulkAt(frame, i); !ok || (string(pattern) != UserPattern && string(pattern) != TopicPattern) {
			return Target{}, Message{}, false
		}
	default:
		return Target{}, Message{}, false
	}
	channel, i, ok := bulkAt(frame, i)
	if !ok {
		return Target{}, Message{}, false
	}
	if !bytes.HasPrefix(channel, []byte(UserPrefix)) && !bytes.HasPrefix(channel, []byte(TopicPrefix)) {
		return Target{}, Message{}, false
	}
	payload, i, ok := bulkAt(frame, i)
	if !ok || i != len(frame) {
		return Target{}, Message{}, false
	}
	t, _ := ParseChannel(view(channel))
	return t, decodeMessage(view(payload)), true
}

// view is b as a string without a copy: valid while b's bytes are.
func view(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// bulkAt reads the bulk string at frame[i:] ("$<n>\r\n<n bytes>\r\n"),
// which frameEnd has found whole, and where the next element starts.
func bulkAt(frame []byte, i int) (s []byte, next int, ok bool) {
	if i >= len(frame) || frame[i] != '$' {
		return nil, 0, false
	}
	nl := bytes.IndexByte(frame[i:], '\n')
	if nl < 2 {
		return nil, 0, false
	}
	n, ok := parseLen(frame[i+1 : i+nl-1])
	if !ok || n < 0 {
		return nil, 0, false
	}
	start := i + nl + 1
	if start+n+2 > len(frame) {
		return nil, 0, false
	}
	return frame[start : start+n], start + n + 2, true
}

// frameEnd finds where the RESP2 or RESP3 frame at the start of b ends:
// its length, -1 when b holds only part of it, or an error when b does not
// start with a frame.
func frameEnd(b []byte) (int, error) {
	i, need := 0, 1 // need: values still to read, nested ones included
	for need > 0 {
		if i >= len(b) {
			return -1, nil
		}
		nl := bytes.IndexByte(b[i:], '\n')
		if nl < 0 {
			if len(b)-i > maxPushFrame {
				return 0, fmt.Errorf("%w: a line longer than %d bytes", errPushProtocol, maxPushFrame)
			}
			return -1, nil
		}
		if nl < 2 || b[i+nl-1] != '\r' {
			return 0, fmt.Errorf("%w: a line without CRLF", errPushProtocol)
		}
		typ, line, next := b[i], b[i+1:i+nl-1], i+nl+1
		need--
		switch typ {
		case '+', '-', ':', ',', '#', '(', '_':
			i = next
		case '$', '!', '=': // bulk string, bulk error, verbatim string
			n, ok := parseLen(line)
			switch {
			case !ok || n < -1:
				return 0, fmt.Errorf("%w: bulk length %q", errPushProtocol, line)
			case n == -1: // RESP2's null bulk string
				i = next
			case n > maxPushFrame:
				return 0, fmt.Errorf("%w: a bulk string of %d bytes", errPushProtocol, n)
			case next+n+2 > len(b):
				return -1, nil
			case b[next+n] != '\r' || b[next+n+1] != '\n':
				return 0, fmt.Errorf("%w: a bulk string without CRLF", errPushProtocol)
			default:
				i = next + n + 2
			}
		case '*', '~', '>', '%', '|': // array, set, push, map, attribute
			n, ok := parseLen(line)
			if !ok || n < -1 || n > maxPushFrame {
				return 0, fmt.Errorf("%w: aggregate length %q", errPushProtocol, line)
			}
			if n > 0 && (typ == '%' || typ == '|') {
				n *= 2 // key and value
			}
			if typ == '|' {
				n++ // an attribute precedes the value it describes
			}
			if n > 0 {
				need += n
			}
			if need > maxPushFrame {
				return 0, fmt.Errorf("%w: too many nested values", errPushProtocol)
			}
			i = next
		default:
			return 0, fmt.Errorf("%w: unknown type %q", errPushProtocol, typ)
		}
	}
	return i, nil
}

// parseLen reads a RESP length: decimal, maybe negative, at most 10 digits.
func parseLen(b []byte) (int, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 10 {
		return 0, false
	}
	n := 0
	for _, d := range b {
		if d < '0' || d > '9' {
			return 0, false
		}
		n = n*10 + int(d-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

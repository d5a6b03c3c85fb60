package mesh

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The framing of a link, both ways: a 4-byte big-endian length, then that
// many bytes, a type byte first. Strings are a uvarint length and the bytes.
//
//	msg   seq, channel, payload (the rest)   opener -> peer: a published message
//	ping  (nothing)                          opener -> peer: "still here, ack please"
//	ack   seq                                peer -> opener: every msg up to seq was delivered
//	call  id, op, user, n, n x (key, value)  opener -> peer: a state operation
//	reply id, status, (n, pairs | message)   peer -> opener: its result
//
// Binary, not JSON: a message's frame is its payload plus a dozen bytes,
// written as it is, and read without a copy until it is delivered.
const (
	frameMsg   byte = 1
	framePing  byte = 2
	frameAck   byte = 3
	frameCall  byte = 4
	frameReply byte = 5
)

// State operations a call carries.
const (
	opGet   byte = 1 // the user's fields
	opSet   byte = 2 // merge fields, overwriting
	opDel   byte = 3 // delete the named fields (the keys; none: all)
	opMerge byte = 4 // add the fields the user lacks (a former owner's hand-over)
)

// Reply statuses.
const (
	statusOK  byte = 0
	statusErr byte = 1
)

// frameHeader is the length prefix's size.
const frameHeader = 4

var errFrame = errors.New("mesh: malformed frame")

// appendStr appends a length-prefixed string.
func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendFields appends a count and the pairs.
func appendFields(b []byte, fields map[string]string) []byte {
	b = binary.AppendUvarint(b, uint64(len(fields)))
	for k, v := range fields {
		b = appendStr(appendStr(b, k), v)
	}
	return b
}

// beginFrame starts a frame of type typ in b (its length is filled in by
// endFrame).
func beginFrame(b []byte, typ byte) []byte {
	return append(b, 0, 0, 0, 0, typ)
}

// endFrame sets the length of the frame that starts at b[start:] and
// continues with extra bytes written after b.
func endFrame(b []byte, start, extra int) []byte {
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-frameHeader+extra))
	return b
}

// appendMsgHeader appends a msg frame up to its payload, which the caller
// writes right after: the payload is never copied into the frame.
func appendMsgHeader(b []byte, seq uint64, channel string, payloadLen int) []byte {
	start := len(b)
	b = beginFrame(b, frameMsg)
	b = binary.AppendUvarint(b, seq)
	b = appendStr(b, channel)
	return endFrame(b, start, payloadLen)
}

func appendPing(b []byte) []byte {
	start := len(b)
	return endFrame(beginFrame(b, framePing), start, 0)
}

func appendAck(b []byte, seq uint64) []byte {
	start := len(b)
	b = binary.AppendUvarint(beginFrame(b, frameAck), seq)
	return endFrame(b, start, 0)
}

func appendCall(b []byte, id uint64, op byte, user string, fields map[string]string) []byte {
	start := len(b)
	b = binary.AppendUvarint(beginFrame(b, frameCall), id)
	b = append(b, op)
	b = appendStr(b, user)
	b = appendFields(b, fields)
	return endFrame(b, start, 0)
}

func appendReply(b []byte, id uint64, fields map[string]string, err error) []byte {
	start := len(b)
	b = binary.AppendUvarint(beginFrame(b, frameReply), id)
	if err != nil {
		b = appendStr(append(b, statusErr), err.Error())
	} else {
		b = appendFields(append(b, statusOK), fields)
	}
	return endFrame(b, start, 0)
}

// readFrame reads one frame into buf (grown as needed, up to max bytes) and
// returns its type and body, which stay valid until the next call.
func readFrame(br *bufio.Reader, buf []byte, max int) (typ byte, body, grown []byte, err error) {
	var head [frameHeader]byte
	if _, err := io.ReadFull(br, head[:]); err != nil {
		return 0, nil, buf, err
	}
	n := int(binary.BigEndian.Uint32(head[:]))
	if n < 1 || n > max {
		return 0, nil, buf, fmt.Errorf("%w: length %d (at most %d)", errFrame, n, max)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(br, buf); err != nil {
		return 0, nil, buf, err
	}
	return buf[0], buf[1:], buf, nil
}

// decoder reads a frame's body; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, k := binary.Uvarint(d.b)
	if k <= 0 {
		d.err = errFrame
		return 0
	}
	d.b = d.b[k:]
	return v
}

func (d *decoder) byte1() byte {
	if d.err != nil || len(d.b) == 0 {
		d.err = errFrame
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) str() string {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.err = errFrame
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) fields() map[string]string {
	n := d.uvarint()
	// Each pair takes two bytes at least: a count beyond that is a lie, and
	// must not size an allocation.
	if d.err != nil || n > uint64(len(d.b))/2 {
		d.err = errFrame
		return nil
	}
	out := make(map[string]string, n)
	for range n {
		k := d.str()
		out[k] = d.str()
	}
	return out
}

// done reports the first error, or trailing bytes.
func (d *decoder) done() error {
	if d.err == nil && len(d.b) > 0 {
		d.err = errFrame
	}
	return d.err
}

// msgFrame is a decoded msg; payload is the frame's own bytes, valid
// until the next read (delivery copies it once, into the message).
type msgFrame struct {
	seq     uint64
	channel string
	payload []byte
}

func decodeMsg(body []byte) (msgFrame, error) {
	d := decoder{b: body}
	f := msgFrame{seq: d.uvarint(), channel: d.str()}
	if d.err == nil {
		f.payload, d.b = d.b, nil
	}
	return f, d.done()
}

func decodeAck(body []byte) (uint64, error) {
	d := decoder{b: body}
	seq := d.uvarint()
	return seq, d.done()
}

type callFrame struct {
	id     uint64
	op     byte
	user   string
	fields map[string]string
}

func decodeCall(body []byte) (callFrame, error) {
	d := decoder{b: body}
	f := callFrame{id: d.uvarint(), op: d.byte1(), user: d.str()}
	f.fields = d.fields()
	return f, d.done()
}

type replyFrame struct {
	id     uint64
	fields map[string]string
	err    string // "" : ok
}

func decodeReply(body []byte) (replyFrame, error) {
	d := decoder{b: body}
	f := replyFrame{id: d.uvarint()}
	switch d.byte1() {
	case statusOK:
		f.fields = d.fields()
	case statusErr:
		f.err = d.str()
		if f.err == "" {
			f.err = "error"
		}
	default:
		d.err = errFrame
	}
	return f, d.done()
}

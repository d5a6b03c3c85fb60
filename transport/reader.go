package transport

import (
	"encoding/binary"

	"github.com/gobwas/ws"
)

// readState is the incremental parser of client frames. Data payloads are
// streamed (unmasked, validated and, only when the connection collects
// messages, copied) as bytes arrive, so an idle connection or one in the
// middle of a large frame holds no buffer; only an incomplete header or
// control frame (at most 139 bytes) is kept between reads.
type readState struct {
	pend []byte // incomplete header or control frame from the previous read
	msg  []byte // collected message (ConnOptions.Messages only)

	remain  uint64 // payload bytes of the current data frame still to come
	msgLen  uint32 // of the message so far; the limit is far below 4 GiB
	mask    [4]byte
	maskPos uint8 // only the position modulo 4 matters
	msgOp   byte  // opText or opBinary while a message is in progress, else 0

	frameFin bool
	// done: a close frame came in, or the input was invalid; further input is
	// ignored.
	done bool
	// peerClosed: the peer's close frame came in, so the socket closes as soon
	// as our close frame is written.
	peerClosed bool
	utf8       utf8Validator
}

// frameHeader is a parsed client frame header.
type frameHeader struct {
	fin    bool
	op     byte
	length uint64
	mask   [4]byte
}

// parseHeader parses the client frame header at the start of b. It returns the
// header length, 0 when b holds only part of a header, or a close code when the
// header breaks the protocol.
func parseHeader(b []byte) (h frameHeader, n int, code int) {
	if len(b) < 2 {
		return h, 0, 0
	}
	b0, b1 := b[0], b[1]
	h.fin = b0&0x80 != 0
	h.op = b0 & 0x0F
	if b0&0x70 != 0 { // RSV bits: no extension was negotiated
		return h, 0, CloseProtocolError
	}
	switch h.op {
	case opContinuation, opText, opBinary:
	case opClose, opPing, opPong:
		if !h.fin || b1&0x7F > maxControlPayload {
			return h, 0, CloseProtocolError
		}
	default:
		return h, 0, CloseProtocolError
	}
	if b1&0x80 == 0 { // clients must mask every frame (RFC 6455 section 5.1)
		return h, 0, CloseProtocolError
	}
	n = 2
	switch l := b1 & 0x7F; l {
	case 126:
		if len(b) < 4 {
			return h, 0, 0
		}
		h.length = uint64(binary.BigEndian.Uint16(b[2:]))
		n = 4
	case 127:
		if len(b) < 10 {
			return h, 0, 0
		}
		h.length = binary.BigEndian.Uint64(b[2:])
		if h.length>>63 != 0 {
			return h, 0, CloseProtocolError
		}
		n = 10
	default:
		h.length = uint64(l)
	}
	if len(b) < n+4 {
		return h, 0, 0
	}
	copy(h.mask[:], b[n:n+4])
	return h, n + 4, 0
}

// feed parses client bytes. b may be reused by the caller after it returns.
// Replies (pong, close) are queued on c; the driver flushes afterwards.
func (c *Conn) feed(b []byte) {
	if c.raw != nil {
		return // not WebSocket: input is ignored, only EOF matters
	}
	rs := &c.rd
	for len(b) > 0 && !rs.done {
		if rs.remain > 0 {
			n := len(b)
			if uint64(n) > rs.remain {
				n = int(rs.remain)
			}
			c.dataPayload(b[:n])
			b = b[n:]
			continue
		}
		h, n, code := parseHeader(b)
		if code != 0 {
			c.fail(code, "protocol error")
			return
		}
		if n == 0 {
			rs.pend = append(rs.pend[:0], b...)
			return
		}
		if h.op >= opClose {
			end := n + int(h.length)
			if len(b) < end {
				rs.pend = append(rs.pend[:0], b...)
				return
			}
			payload := b[n:end]
			ws.Cipher(payload, h.mask, 0)
			c.control(h.op, payload)
			b = b[end:]
			continue
		}
		b = b[n:]
		c.dataHeader(h)
	}
	// Every byte was consumed (or the rest is ignored): an idle connection
	// holds no buffer.
	rs.pend = nil
}

func (c *Conn) dataHeader(h frameHeader) {
	rs := &c.rd
	max := uint64(c.srv.cfg.MaxMessageSize)
	switch {
	case h.op == opContinuation && rs.msgOp == 0:
		c.fail(CloseProtocolError, "unexpected continuation frame")
		return
	case h.op != opContinuation && rs.msgOp != 0:
		c.fail(CloseProtocolError, "expected continuation frame")
		return
	case h.length > max || uint64(rs.msgLen)+h.length > max:
		c.fail(CloseTooBig, "message too big")
		return
	}
	if h.op != opContinuation {
		rs.msgOp = h.op
		rs.utf8.reset()
	}
	rs.msgLen += uint32(h.length)
	rs.remain = h.length
	rs.mask = h.mask
	rs.maskPos = 0
	rs.frameFin = h.fin
	if h.length == 0 {
		c.endFrame()
	}
}

func (c *Conn) dataPayload(p []byte) {
	rs := &c.rd
	ws.Cipher(p, rs.mask, int(rs.maskPos))
	rs.maskPos = uint8((int(rs.maskPos) + len(p)) & 3)
	rs.remain -= uint64(len(p))
	if rs.msgOp == opText && !rs.utf8.write(p) {
		c.fail(CloseInvalidPayload, "invalid UTF-8")
		return
	}
	if c.messages {
		rs.msg = append(rs.msg, p...)
	}
	if rs.remain == 0 {
		c.endFrame()
	}
}

// endFrame runs when the current data frame's payload is complete.
func (c *Conn) endFrame() {
	rs := &c.rd
	if !rs.frameFin {
		return
	}
	text := rs.msgOp == opText
	if text && !rs.utf8.complete() {
		c.fail(CloseInvalidPayload, "invalid UTF-8")
		return
	}
	rs.msgOp, rs.msgLen = 0, 0
	if c.messages {
		msg := rs.msg
		rs.msg = nil
		c.handler.OnMessage(c, text, msg)
	}
}

func (c *Conn) control(op byte, payload []byte) {
	switch op {
	case opPing:
		c.mu.Lock()
		if c.state == stateOpen {
			c.sendControlLocked(controlFrame(opPong, payload))
		}
		c.mu.Unlock()
	case opPong:
		// Any input counts as liveness; the driver has recorded it already.
	case opClose:
		c.peerClose(payload)
	}
}

// peerClose handles the peer's close frame: a valid one is echoed and ends
// the input; an invalid one fails the connection.
func (c *Conn) peerClose(payload []byte) {
	code, reason := CloseNoStatus, []byte(nil)
	switch {
	case len(payload) == 1:
		c.fail(CloseProtocolError, "invalid close frame")
		return
	case len(payload) >= 2:
		code = int(binary.BigEndian.Uint16(payload))
		reason = payload[2:]
		if !validCloseCode(code) {
			c.fail(CloseProtocolError, "invalid close code")
			return
		}
		var v utf8Validator
		if !v.write(reason) || !v.complete() {
			c.fail(CloseInvalidPayload, "invalid UTF-8")
			return
		}
	}
	c.rd.done = true
	c.rd.peerClosed = true
	c.mu.Lock()
	if c.state < stateClosing {
		// Echo the peer's code (RFC 6455 section 5.5.1); the socket closes
		// once the echo is written.
		echo := code
		if code == CloseNoStatus {
			echo = 0
		}
		c.closeLocked(echo, "")
		c.closeCode = int16(code)
	}
	c.mu.Unlock()
}

// fail ends the connection after a protocol violation: a close frame with
// code, then the socket closes as soon as that is written.
func (c *Conn) fail(code int, reason string) {
	c.rd.done = true
	c.rd.pend = nil
	c.rd.msg = nil
	c.mu.Lock()
	if c.state < stateClosing {
		c.closeLocked(code, reason)
	}
	c.mu.Unlock()
}

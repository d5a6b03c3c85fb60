package transport

import (
	"encoding/binary"
	"unicode/utf8"
)

// WebSocket opcodes (RFC 6455 section 5.2).
const (
	opContinuation byte = 0x0
	opText         byte = 0x1
	opBinary       byte = 0x2
	opClose        byte = 0x8
	opPing         byte = 0x9
	opPong         byte = 0xA
)

// Close codes: RFC 6455 section 7.4 and the notify contract (DESIGN.md section 2).
const (
	CloseNormal          = 1000
	CloseGoingAway       = 1001
	CloseProtocolError   = 1002
	CloseNoStatus        = 1005 // never sent: stands for "the peer's close frame had no code"
	CloseAbnormal        = 1006 // never sent: the TCP connection ended without a close frame
	CloseInvalidPayload  = 1007
	CloseTooBig          = 1009
	CloseServiceRestart  = 1012 // reason "shutdown" or "moved": reconnect, with jitter
	CloseTokenExpired    = 4001
	CloseDisconnected    = 4003
	CloseSlowConsumer    = 4008
	maxControlPayload    = 125
	maxServerFrameHeader = 10
)

// pingFrame is the server's keep-alive: an empty ping. Shared and never modified.
var pingFrame = []byte{0x80 | opPing, 0}

// appendHeader appends an unmasked, final frame header for a payload of n bytes.
func appendHeader(dst []byte, op byte, n int) []byte {
	switch {
	case n <= 125:
		return append(dst, 0x80|op, byte(n))
	case n <= 0xFFFF:
		return append(dst, 0x80|op, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|op, 127)
		return binary.BigEndian.AppendUint64(dst, uint64(n))
	}
}

// DataFrame builds a complete server frame carrying payload verbatim: a text
// frame when payload is valid UTF-8, else a binary frame. The result is one
// allocation and is never modified afterwards, so the same bytes can be queued
// on any number of connections.
func DataFrame(payload string) []byte {
	return appendDataFrame(make([]byte, 0, maxServerFrameHeader+len(payload)), payload)
}

// TextFrame builds a text frame from bytes the caller knows to be UTF-8 (the
// server's own JSON).
func TextFrame(payload []byte) []byte {
	f := make([]byte, 0, maxServerFrameHeader+len(payload))
	f = appendHeader(f, opText, len(payload))
	return append(f, payload...)
}

// closeFrame builds a close frame. code 0 means no status (an empty payload);
// the reason is cut to fit a control frame.
func closeFrame(code int, reason string) []byte {
	if code == 0 {
		return []byte{0x80 | opClose, 0}
	}
	if len(reason) > maxControlPayload-2 {
		reason = reason[:maxControlPayload-2]
		for len(reason) > 0 && !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	f := make([]byte, 0, 4+len(reason))
	f = appendHeader(f, opClose, 2+len(reason))
	f = binary.BigEndian.AppendUint16(f, uint16(code))
	return append(f, reason...)
}

// controlFrame builds a pong (or other control frame) echoing payload (<= 125 bytes).
func controlFrame(op byte, payload []byte) []byte {
	f := make([]byte, 0, 2+len(payload))
	f = appendHeader(f, op, len(payload))
	return append(f, payload...)
}

// validCloseCode reports whether a peer may send code in a close frame.
func validCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// FramePayload returns the payload of a complete, unmasked server frame
// built by DataFrame or TextFrame (a long-poll client gets the text a
// WebSocket client gets framed).
func FramePayload(frame []byte) []byte {
	if len(frame) < 2 {
		return nil
	}
	switch n := frame[1] & 0x7f; {
	case n < 126:
		return frame[2:]
	case n == 126:
		return frame[4:]
	default:
		return frame[10:]
	}
}

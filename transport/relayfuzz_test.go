package transport

import (
	"bufio"
	"bytes"
	"net/http"
	"testing"
)

// FuzzRelayResponse: whatever an owner answers a relayed handshake with,
// the relaying node reads it without a panic, and the head it would pass to
// the client parses again to the same status and headers.
func FuzzRelayResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n\x81\x05hello",
		"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n5\r\ndata:\r\n",
		"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\n{}",
		"HTTP/1.1 101\r\n\r\n",
		"garbage\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	req, _ := http.NewRequest(http.MethodGet, "http://owner/notify/ws", nil)
	f.Fuzz(func(t *testing.T, b []byte) {
		br := bufio.NewReader(bytes.NewReader(b))
		resp, err := http.ReadResponse(br, req)
		if err != nil || !relayAccepted(resp) {
			return
		}
		head := responseHead(resp, readAhead(br))
		again, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(head)), req)
		if err != nil {
			t.Fatalf("head %q does not parse: %v", head, err)
		}
		if again.StatusCode != resp.StatusCode || again.Header.Get("Content-Type") != resp.Header.Get("Content-Type") {
			t.Fatalf("head %q reads as %d %v, was %d %v", head, again.StatusCode, again.Header, resp.StatusCode, resp.Header)
		}
	})
}

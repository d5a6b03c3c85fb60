package transport

import (
	"testing"
	"unsafe"
)

// TestConnSize: an idle connection is its Conn and nothing else, so this is
// its memory. 240 bytes is a size class of Go's allocator (the next is 256):
// growing it needs a reason.
func TestConnSize(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("the size is checked on 64-bit platforms")
	}
	var c Conn
	if got := unsafe.Sizeof(c); got > 240 {
		t.Fatalf("Conn is %d bytes, want at most 240 (see above)", got)
	}
}

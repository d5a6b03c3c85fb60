package transport

import (
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// SharedFrame is a data frame in a pooled buffer. DataFrame allocates each
// message's frame, which at a high rate of messages to one user each is
// most of what a delivery allocates; a SharedFrame's buffer goes back to
// its pool once everyone holding it is done, and the next message's frame
// is built in it.
//
// Every holder has a reference: its maker (FramePool.DataFrame) until it
// calls Release, and each connection that queued it (Conn.PushShared) until
// the frame is written or dropped. The bytes must not be read by anyone
// without a reference: once the last is gone they are another frame's.
type SharedFrame struct {
	refs atomic.Int32
	b    []byte
	pool *sync.Pool // nil: too long to pool, the collector takes it
}

// Bytes is the frame, valid until the caller's Release.
func (f *SharedFrame) Bytes() []byte { return f.b }

// retain takes a reference for a connection's queue.
func (f *SharedFrame) retain() { f.refs.Add(1) }

// Release gives up one reference; the last one returns the buffer to its
// pool.
func (f *SharedFrame) Release() {
	switch n := f.refs.Add(-1); {
	case n > 0:
	case n == 0:
		if f.pool != nil {
			f.b = f.b[:0]
			f.pool.Put(f)
		}
	default:
		panic("transport: SharedFrame released more often than taken")
	}
}

// frameClasses are the buffer sizes a FramePool keeps, one pool each. A
// frame longer than the last is allocated and left to the collector: such
// payloads are rare, and a pool of them would hold on to much memory.
var frameClasses = [...]int{128, 256, 512, 1024, 2048, 4096}

// FramePool makes SharedFrames from buffers of a few sizes. Its zero value
// is ready; it may be used from any goroutine. Like any sync.Pool it keeps
// nothing across two garbage collections.
type FramePool struct {
	classes [len(frameClasses)]sync.Pool
}

// DataFrame is the transport.DataFrame of payload in a pooled buffer, with
// the caller's reference.
func (p *FramePool) DataFrame(payload string) *SharedFrame {
	n := maxServerFrameHeader + len(payload)
	var f *SharedFrame
	for i, size := range frameClasses {
		if n <= size {
			pool := &p.classes[i]
			var ok bool
			if f, ok = pool.Get().(*SharedFrame); !ok {
				f = &SharedFrame{b: make([]byte, 0, size), pool: pool}
			}
			break
		}
	}
	if f == nil {
		f = &SharedFrame{b: make([]byte, 0, n)}
	}
	f.refs.Store(1)
	f.b = appendDataFrame(f.b[:0], payload)
	return f
}

// appendDataFrame appends the data frame of payload (DataFrame) to dst.
func appendDataFrame(dst []byte, payload string) []byte {
	op := opBinary
	if utf8.ValidString(payload) {
		op = opText
	}
	return append(appendHeader(dst, op, len(payload)), payload...)
}

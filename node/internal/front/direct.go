package front

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"time"
)

// Buffer sizes of the direct route: the request head (a larger head is read
// on past the buffer, up to MaxHeaderBytes) and the writer a hijacker gets
// (the 101 response and its few headers).
const (
	readBufSize  = 4 << 10
	writeBufSize = 1 << 10
)

// pools are the direct route's buffers: taken for one request, given back
// when its handler returns, hijacked or not.
type pools struct {
	readers, writers sync.Pool
}

func (p *pools) reader(r io.Reader) *bufio.Reader {
	if br, ok := p.readers.Get().(*bufio.Reader); ok {
		br.Reset(r)
		return br
	}
	return bufio.NewReaderSize(r, readBufSize)
}

func (p *pools) writer(w io.Writer) *bufio.Writer {
	if bw, ok := p.writers.Get().(*bufio.Writer); ok {
		bw.Reset(w)
		return bw
	}
	return bufio.NewWriterSize(w, writeBufSize)
}

func (p *pools) put(br *bufio.Reader, bw *bufio.Writer) {
	br.Reset(nil)
	p.readers.Put(br)
	if bw != nil {
		bw.Reset(nil)
		p.writers.Put(bw)
	}
}

// headReader reads a request head from nc, failing past limit bytes.
type headReader struct {
	nc    net.Conn
	limit int
}

var errHeadTooLarge = errors.New("request head too large")

func (h *headReader) Read(p []byte) (int, error) {
	if h.limit <= 0 {
		return 0, errHeadTooLarge
	}
	if len(p) > h.limit {
		p = p[:h.limit]
	}
	n, err := h.nc.Read(p)
	h.limit -= n
	return n, err
}

// serveDirect reads one request from nc and serves it with the Server's
// handler. Unless the handler hijacks nc, the answer goes out with
// "Connection: close" and nc is closed: a refused handshake's client opens
// a new connection anyway.
func (f *Front) serveDirect(base context.Context, nc net.Conn) {
	// A bufio.Reader fills with up to readBufSize bytes a read: the limit
	// leaves room for that past MaxHeaderBytes, as net/http's does.
	w := &directWriter{nc: nc, head: headReader{nc: nc, limit: f.maxHead + readBufSize}, pools: &f.pools}
	w.br = f.pools.reader(&w.head)
	defer w.release()
	req, err := http.ReadRequest(w.br)
	if err != nil {
		f.refuseHead(nc, err)
		return
	}
	_ = nc.SetReadDeadline(time.Time{}) // what follows the head is the handler's
	ctx, cancel := context.WithCancel(base)
	defer cancel()
	req = req.WithContext(ctx)
	req.RemoteAddr = nc.RemoteAddr().String()
	defer func() {
		if p := recover(); p != nil {
			w.failed = true
			if p != http.ErrAbortHandler { // net/http's way to abort quietly
				f.log.Error("panic serving a handshake", "path", req.URL.Path, "remote", req.RemoteAddr,
					"err", fmt.Errorf("%v", p), "stack", string(debug.Stack()))
			}
		}
		if !w.hijacked {
			w.finish()
		}
	}()
	f.cfg.Server.Handler.ServeHTTP(w, req)
}

// refuseHead answers a request head that could not be read, as net/http
// does (431 or 400), unless the connection is gone, and closes nc.
func (f *Front) refuseHead(nc net.Conn, err error) {
	defer nc.Close()
	var ne net.Error
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || (errors.As(err, &ne) && ne.Timeout()) {
		return
	}
	status := http.StatusBadRequest
	if errors.Is(err, errHeadTooLarge) {
		status = http.StatusRequestHeaderFieldsTooLarge
	}
	f.log.Debug("bad handshake request", "remote", nc.RemoteAddr().String(), "err", err)
	_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(nc, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n%d %s",
		status, http.StatusText(status), status, http.StatusText(status))
}

// directWriter is the http.ResponseWriter of a direct request. An answer
// is collected and written when the handler returns; Hijack hands the
// connection over instead.
type directWriter struct {
	nc       net.Conn
	head     headReader
	br       *bufio.Reader
	bw       *bufio.Writer // the hijacker's
	pools    *pools
	header   http.Header
	status   int
	body     bytes.Buffer
	hijacked bool
	failed   bool // the handler panicked: close without an answer
}

var (
	_ http.ResponseWriter = (*directWriter)(nil)
	_ http.Hijacker       = (*directWriter)(nil)
)

func (w *directWriter) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header)
	}
	return w.header
}

func (w *directWriter) WriteHeader(status int) {
	if w.status == 0 && status >= 200 && !w.hijacked {
		w.status = status
	}
}

func (w *directWriter) Write(b []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	w.WriteHeader(http.StatusOK)
	return w.body.Write(b)
}

// Hijack hands the connection to the handler, with what was read past the
// request head in the reader. The reader and writer are the front's again
// once the handler returns: a handler reads what it needs of them first
// (transport.Upgrade and RelayTo copy the reader's bytes).
func (w *directWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if w.status != 0 {
		return nil, nil, errors.New("front: hijack after the answer began")
	}
	w.hijacked = true
	// Reads past the head go to the connection itself, unlimited.
	w.head.limit = math.MaxInt
	w.bw = w.pools.writer(w.nc)
	return w.nc, bufio.NewReadWriter(w.br, w.bw), nil
}

// finish writes the collected answer and closes the connection.
func (w *directWriter) finish() {
	defer w.nc.Close()
	if w.failed {
		return
	}
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	h := w.Header()
	if h.Get("Content-Type") == "" && w.body.Len() > 0 {
		h.Set("Content-Type", http.DetectContentType(w.body.Bytes()))
	}
	h.Set("Content-Length", strconv.Itoa(w.body.Len()))
	h.Set("Connection", "close")
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	bw := w.pools.writer(w.nc)
	w.bw = bw // release gives it back
	_ = w.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(bw, "HTTP/1.1 %d %s\r\n", status, http.StatusText(status))
	_ = h.Write(bw)
	bw.WriteString("\r\n")
	bw.Write(w.body.Bytes())
	if bw.Flush() == nil {
		if cw, ok := w.nc.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite() // FIN after the answer, so that closing does not reset it
		}
	}
}

// release gives the buffers back to the pools.
func (w *directWriter) release() { w.pools.put(w.br, w.bw) }

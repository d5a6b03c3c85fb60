package mesh

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// The opener's side of a link: dial, upgrade, write, read acks and replies,
// redial with backoff.

// run is the link's one writer goroutine: it connects, writes what is
// queued in batches, and reconnects after a failure, until ctx ends or the
// link is closed; then what is still queued is dropped and counted.
func (l *link) run(ctx context.Context) {
	backoff := minBackoff
	for ctx.Err() == nil && !l.isClosed() {
		conn, br, acked, err := l.dial(ctx)
		if err != nil {
			l.dialFailed(err)
			if !l.waitRetry(ctx, backoff) {
				break
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		l.connected(acked)
		began := time.Now()
		err = l.serve(ctx, conn, br)
		l.disconnected(err)
		if time.Since(began) > maxBackoff {
			backoff = minBackoff // it worked for a while: retry at once
		}
	}
	reason := reasonStopped
	if l.isClosed() {
		reason = reasonLeft
	}
	l.abandon(reason)
}

// waitRetry waits d before the next dial, dropping what expired meanwhile.
// It reports false when the link should end instead.
func (l *link) waitRetry(ctx context.Context, d time.Duration) bool {
	l.expire(time.Now())
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			l.expire(time.Now())
			return !l.isClosed()
		case <-l.wake:
			if l.isClosed() {
				return false
			}
		}
	}
}

// dial opens a connection to the peer and upgrades it to a link: a GET on
// LinkPath signed with the cluster secret, naming this node, the peer and
// the link's epoch; the peer answers 101 with the last sequence number it
// delivered of this epoch.
func (l *link) dial(ctx context.Context) (net.Conn, *bufio.Reader, uint64, error) {
	addr := l.address()
	if addr == "" {
		return nil, nil, 0, errors.New("no address gossiped")
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, nil, 0, err
	}
	stop := context.AfterFunc(dctx, func() { conn.Close() })
	br, acked, err := l.upgrade(conn, addr)
	if !stop() || err != nil {
		conn.Close()
		return nil, nil, 0, errors.Join(err, dctx.Err())
	}
	return conn, br, acked, nil
}

func (l *link) upgrade(conn net.Conn, addr string) (*bufio.Reader, uint64, error) {
	q := url.Values{"from": {l.m.cfg.NodeName}, "to": {l.peer}, "epoch": {l.epoch}}
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+LinkPath+"?"+q.Encode(), nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", Protocol)
	l.m.cfg.Auth.Sign(req, nil)
	if err := req.Write(conn); err != nil {
		return nil, 0, err
	}
	br := newReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, 0, fmt.Errorf("%s answered %d: %s", l.peer, resp.StatusCode, bytes.TrimSpace(msg))
	}
	acked, err := strconv.ParseUint(resp.Header.Get(AckedHeader), 10, 64)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: bad %s header: %w", l.peer, AckedHeader, err)
	}
	return br, acked, nil
}

// connReader is the reader goroutine of one connection; err is set
// before done closes.
type connReader struct {
	done chan struct{}
	err  error
}

// serve writes on conn until it fails, ctx ends or the link closes, with a
// reader of acks and replies beside it; it returns once both have ended.
func (l *link) serve(ctx context.Context, conn net.Conn, br *bufio.Reader) error {
	rd := &connReader{done: make(chan struct{})}
	go func() {
		defer close(rd.done)
		rd.err = l.readLoop(conn, br)
	}()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	err := l.writeLoop(ctx, conn, rd)
	stop()
	conn.Close()
	<-rd.done
	return err
}

// writeLoop writes batches as they queue up, one flush per batch, and a
// ping when idle so that the peer acks and a dead connection is noticed.
func (l *link) writeLoop(ctx context.Context, conn net.Conn, rd *connReader) error {
	bw := bufio.NewWriterSize(conn, writeBuffer)
	ping := time.NewTicker(pingEvery)
	defer ping.Stop()
	var head []byte
	var batch []entry
	var calls []*call
	for {
		batch, calls = l.take(batch[:0], calls[:0])
		if len(batch) == 0 && len(calls) == 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-rd.done:
				return rd.err
			case <-l.wake:
				if l.isClosed() {
					return errLinkClosed
				}
				continue
			case <-ping.C:
				head = appendPing(head[:0])
				_, _ = bw.Write(head)
			}
		}
		_ = conn.SetWriteDeadline(time.Now().Add(writeTimeout))
		for i := range batch {
			e := &batch[i]
			head = appendMsgHeader(head[:0], e.seq, e.channel, len(e.payload))
			_, _ = bw.Write(head)
			_, _ = bw.WriteString(e.payload)
		}
		for _, c := range calls {
			head = appendCall(head[:0], c.id, c.op, c.user, c.fields)
			_, _ = bw.Write(head)
		}
		clear(batch) // the payloads are the queue's to release
		clear(calls)
		if err := bw.Flush(); err != nil {
			return err
		}
	}
}

// readLoop reads the peer's acks and replies until the connection fails.
// A peer silent for readTimeout (it acks every batch and every ping) is
// taken for gone.
func (l *link) readLoop(conn net.Conn, br *bufio.Reader) error {
	var buf []byte
	for {
		_ = conn.SetReadDeadline(time.Now().Add(readTimeout))
		typ, body, grown, err := readFrame(br, buf, maxFrameIn)
		buf = grown
		if err != nil {
			return err
		}
		if cap(buf) > maxKeptBuffer {
			buf = nil // body is still valid: it is the old array's
		}
		switch typ {
		case frameAck:
			seq, err := decodeAck(body)
			if err != nil {
				return err
			}
			l.acked(seq)
		case frameReply:
			r, err := decodeReply(body)
			if err != nil {
				return err
			}
			l.replied(r)
		default:
			return fmt.Errorf("%w: type %d from the peer", errFrame, typ)
		}
	}
}

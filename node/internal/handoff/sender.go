package handoff

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/notify-dev/notify/broker"
	"github.com/notify-dev/notify/internal/service"
)

// SignatureHeader carries "t=<unix seconds>,v1=<hex HMAC-SHA256 of
// "<t>.<body>" keyed by NOTIFY_WEBHOOK_SECRET>": the application recomputes
// it and refuses a request whose t is old.
const SignatureHeader = "X-Notify-Signature"

// Batching and retries of the webhook.
const (
	maxBatch     = 100
	maxAttempts  = 6
	firstBackoff = 200 * time.Millisecond
	maxBackoff   = 10 * time.Second
)

// Body is what the webhook receives: the messages of one batch.
type Body struct {
	Node     string   `json:"node"`
	Messages []Handed `json:"messages"`
}

// Handed is one message handed off. Payload is the payload when it is
// UTF-8, else PayloadBase64 (standard encoding) carries it.
type Handed struct {
	UserID        string `json:"user_id"`
	Cursor        string `json:"cursor"`
	Event         string `json:"event,omitempty"`
	Payload       string `json:"payload,omitempty"`
	PayloadBase64 string `json:"payload_base64,omitempty"`
}

// Sign returns the signature header value of body at time t.
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

type item struct {
	user string
	msg  broker.Message
}

// sender posts the claimed messages, batched, with retries.
type sender struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics

	mu    sync.Mutex
	queue []item
	wake  chan struct{} // size 1
}

func newSender(cfg Config, log *slog.Logger, m *metrics) *sender {
	return &sender{cfg: cfg, log: log, metrics: m, wake: make(chan struct{}, 1)}
}

func (s *sender) enqueue(user string, m broker.Message) {
	s.mu.Lock()
	if len(s.queue) >= s.cfg.Queue {
		s.queue = s.queue[1:]
		s.metrics.dropped.Inc()
	}
	s.queue = append(s.queue, item{user, m})
	s.mu.Unlock()
	signal(s.wake)
}

func (s *sender) take() []item {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(len(s.queue), maxBatch)
	batch := s.queue[:n:n]
	s.queue = s.queue[n:]
	return batch
}

func (s *sender) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		s.flush(ctx)
	}
}

// flush posts what is queued until it is empty or ctx ends (a stop).
func (s *sender) flush(ctx context.Context) {
	for batch := s.take(); len(batch) > 0 && ctx.Err() == nil; batch = s.take() {
		s.post(ctx, batch)
	}
}

func encode(node string, batch []item) []byte {
	b := Body{Node: node, Messages: make([]Handed, len(batch))}
	for i, it := range batch {
		h := Handed{UserID: it.user, Cursor: it.msg.Cursor.String(), Event: it.msg.Event}
		if utf8.ValidString(it.msg.Payload) {
			h.Payload = it.msg.Payload
		} else {
			h.PayloadBase64 = base64.StdEncoding.EncodeToString([]byte(it.msg.Payload))
		}
		b.Messages[i] = h
	}
	out, _ := json.Marshal(b)
	return out
}

// post sends one batch, retrying with backoff on errors, 5xx, 408 and 429.
// Another 4xx is the application refusing it: retrying would not help.
func (s *sender) post(ctx context.Context, batch []item) {
	body := encode(s.cfg.NodeName, batch)
	wait := firstBackoff
	var err error
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		var retry bool
		if retry, err = s.try(ctx, body); err == nil {
			s.metrics.sent.Add(float64(len(batch)))
			return
		}
		if !retry || attempt == maxAttempts || !service.Sleep(ctx, wait) {
			break
		}
		wait = min(2*wait, maxBackoff)
	}
	s.metrics.failed.Add(float64(len(batch)))
	s.log.Warn("webhook failed; messages not handed off", "messages", len(batch), "err", err)
}

func (s *sender) try(ctx context.Context, body []byte) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.Webhook, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(SignatureHeader, Sign(s.cfg.Secret, time.Now(), body))
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return true, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return false, nil
	case c >= 500 || c == http.StatusRequestTimeout || c == http.StatusTooManyRequests:
		return true, fmt.Errorf("webhook answered %d", c)
	default:
		return false, fmt.Errorf("webhook answered %d", c)
	}
}

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twitchtv/twirp"

	"github.com/notify-dev/notify/api/notifypb"
)

// apiPublisher is a world's send through the server API (Twirp, protobuf),
// with history: sequence number q goes to each user as its own Publish of
// "<user>:<q>", and the cursor each answers is kept. A round ends when
// every user's Publish has answered, and the world publishes one round at
// a time, so each user's messages are published one after the other.
type apiPublisher struct {
	users   []string
	workers int
	// noHistory: the nodes keep none, so Publish answers no cursor.
	noHistory bool
	hdr       http.Header
	httpc     *http.Client
	targets   atomic.Pointer[[]apiTarget] // the nodes it publishes through, in turn

	mu      sync.Mutex
	clients map[string]apiTarget // by node address
	cursors map[string][]string  // user -> the cursor of its message q at [q] ("": failed)
	failed  int
	errs    []string
	rounds  []time.Duration
}

type apiTarget struct {
	name string
	api  notifypb.NotifyService
}

func newAPIPublisher(users []string, workers int) *apiPublisher {
	return &apiPublisher{
		users:   users,
		workers: workers,
		hdr:     http.Header{"Authorization": {"Bearer " + apiKey}},
		httpc: &http.Client{
			Timeout:   10 * time.Second,
			Transport: &http.Transport{MaxIdleConnsPerHost: workers, DisableCompression: true},
		},
		clients: map[string]apiTarget{},
		cursors: map[string][]string{},
	}
}

// use makes the publisher spread its calls over nodes from the next round on.
func (p *apiPublisher) use(nodes []*node) {
	p.mu.Lock()
	var ts []apiTarget
	for _, n := range nodes {
		c, ok := p.clients[n.addr]
		if !ok {
			c = apiTarget{n.name, notifypb.NewNotifyServiceProtobufClient("http://"+n.addr, p.httpc)}
			p.clients[n.addr] = c
		}
		ts = append(ts, c)
	}
	p.mu.Unlock()
	p.targets.Store(&ts)
}

// avoid makes the publisher use every node of live but victim, and returns
// once no call to victim can still be under way (the last round that may
// have used it): the node may then be stopped or killed without a Publish
// whose outcome is unknown.
func (p *apiPublisher) avoid(w *world, live []*node, victim *node) (lastRound int) {
	p.use(slices.DeleteFunc(slices.Clone(live), func(n *node) bool { return n == victim }))
	w.pubMu.Lock() // the round in flight, if any, is over
	defer w.pubMu.Unlock()
	return w.lastSeq()
}

// send is the world's send: one round, sequence number q to every user.
func (p *apiPublisher) send(ctx context.Context, q int) error {
	start := time.Now()
	targets := *p.targets.Load()
	ctx, err := twirp.WithHTTPRequestHeaders(ctx, p.hdr)
	if err != nil {
		return err
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range p.workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(p.users) {
					return
				}
				u, tg := p.users[i], targets[(i+q)%len(targets)]
				resp, err := tg.api.Publish(ctx, &notifypb.PublishRequest{UserIds: []string{u}, Text: u + ":" + strconv.Itoa(q)})
				p.record(u, q, tg.name, resp, err)
			}
		})
	}
	wg.Wait()
	p.mu.Lock()
	p.rounds = append(p.rounds, time.Since(start))
	p.mu.Unlock()
	return nil
}

func (p *apiPublisher) record(user string, q int, via string, resp *notifypb.PublishResponse, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cs := p.cursors[user]
	for len(cs) <= q {
		cs = append(cs, "")
	}
	p.cursors[user] = cs
	if err == nil && p.noHistory {
		return
	}
	if err == nil && len(resp.Cursors) != 1 {
		err = fmt.Errorf("answered %d cursors, want 1", len(resp.Cursors))
	}
	if err != nil {
		// Its outcome is unknown: the check allows it once or not at all.
		p.failed++
		if len(p.errs) < 5 {
			p.errs = append(p.errs, fmt.Sprintf("Publish %s:%d via %s: %v", user, q, via, err))
		}
		return
	}
	cs[q] = resp.Cursors[0]
}

// published returns each user's cursors by sequence number.
func (p *apiPublisher) published() map[string][]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string][]string, len(p.cursors))
	for u, cs := range p.cursors {
		out[u] = slices.Clone(cs)
	}
	return out
}

// summary describes what was published, for the log.
func (p *apiPublisher) summary(elapsed time.Duration) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.rounds) * len(p.users)
	s := fmt.Sprintf("published %d messages (%d rounds to %d users) in %s: %.0f msg/s; a round took p50 %s, worst %s; %d Publish calls failed",
		n, len(p.rounds), len(p.users), elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(),
		percentile(p.rounds, 0.5), percentile(p.rounds, 1), p.failed)
	if len(p.errs) > 0 {
		s += ":\n  " + strings.Join(p.errs, "\n  ")
	}
	return s
}

// cursorPos splits a cursor "<epoch>:<seq>".
func cursorPos(c string) (epoch string, seq uint64, ok bool) {
	i := strings.LastIndexByte(c, ':')
	if i <= 0 {
		return "", 0, false
	}
	n, err := strconv.ParseUint(c[i+1:], 10, 64)
	return c[:i], n, err == nil
}

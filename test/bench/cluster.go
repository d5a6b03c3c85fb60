package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twitchtv/twirp"

	"github.com/notify-dev/notify/api/notifypb"
	"github.com/notify-dev/notify/ring"
)

// relayRun measures what relaying costs: two clustered nodes, half the
// clients land on the node that does not own their user (and are relayed),
// half on the owner. It reports the relaying node's memory and goroutines per
// relayed connection and the p99 latency of both groups under one load.
func relayRun(o options, redisAddr string, rdb *redis.Client, clients []*clientProc2) error {
	a, err := startNotify(o.notify, redisAddr, nodeOpts{name: "bench-a", ip: "127.0.0.20"})
	if err != nil {
		return err
	}
	defer a.stop()
	b, err := startNotify(o.notify, redisAddr, nodeOpts{name: "bench-b", ip: "127.0.0.21", join: []string{a.gossip}})
	if err != nil {
		return err
	}
	defer b.stop()
	for _, n := range []*notifyProc{a, b} {
		if err := n.waitRingMembers(2); err != nil {
			return err
		}
	}
	rb := &relayBench{o: o, rdb: rdb, a: a, b: b, clients: clients}
	rb.relayed, rb.direct = ownedByB(o.relayConns)
	idle, err := rb.connect()
	if err != nil {
		return err
	}
	lat, err := rb.latencyRun()
	if err != nil {
		return err
	}
	printRelayFigures(o.relayConns, idle, lat)

	if err := apiRun(o, a, ""); err != nil {
		return err
	}
	return protocolsRun(o, redisAddr, clients)
}

// relayBench is what the phases of the relay run share: users owned by
// bench-b, relayed ones connected to bench-a through clients[0], direct ones
// to bench-b through clients[1].
type relayBench struct {
	o               options
	rdb             *redis.Client
	a, b            *notifyProc
	clients         []*clientProc2
	relayed, direct []string
}

// relayIdle is bench-a's RSS and goroutines before and after the
// connections.
type relayIdle struct {
	rss0, rss1 int64
	g0, g1     float64
}

// relayLatency is what the relay latency run measured.
type relayLatency struct {
	sent   int
	rr, dr reply // the relayed and the direct clients' reports
}

// ownedByB returns k relayed and k direct user ids, all owned by bench-b.
func ownedByB(k int) (relayed, direct []string) {
	r, _ := ring.New(ring.DefaultConfig(), []string{"bench-a", "bench-b"})
	for i := 0; len(relayed)+len(direct) < 2*k; i++ {
		if u := "user-" + strconv.Itoa(i); r.Locate(u) == "bench-b" {
			if len(relayed) < k {
				relayed = append(relayed, u)
			} else {
				direct = append(direct, u)
			}
		}
	}
	return relayed, direct
}

// connect opens the relayed and the direct connections and measures what
// the relayed ones cost bench-a.
func (rb *relayBench) connect() (relayIdle, error) {
	k := rb.o.relayConns
	var m relayIdle
	m.rss0, m.g0 = rb.a.steadyRSS(), rb.a.goroutines()
	if rep, err := rb.clients[0].call(command{Cmd: "connect", URL: "ws://" + rb.a.addr + "/notify/ws", Src: rb.clients[0].src, Users: rb.relayed, Secret: secret, Concurrency: rb.o.concurrency}); err != nil || rep.Failed > 0 {
		return m, fmt.Errorf("relayed clients: %v %+v", err, rep)
	}
	if rep, err := rb.clients[1].call(command{Cmd: "connect", URL: "ws://" + rb.b.addr + "/notify/ws", Src: rb.clients[1].src, Users: rb.direct, Secret: secret, Concurrency: rb.o.concurrency}); err != nil || rep.Failed > 0 {
		return m, fmt.Errorf("direct clients: %v %+v", err, rep)
	}
	if got := rb.a.metric("notify_forwarded_connections"); int(got) != k {
		return m, fmt.Errorf("bench-a relays %v connections, want %d", got, k)
	}
	time.Sleep(3 * time.Second)
	m.rss1, m.g1 = rb.a.steadyRSS(), rb.a.goroutines()
	info("relay: bench-a relays %d connections: rss %s -> %s, goroutines %.0f -> %.0f", k, mib(m.rss0), mib(m.rss1), m.g0, m.g1)
	return m, nil
}

// latencyRun publishes o.relayRate messages/s, alternately to a relayed
// and a direct user, then closes both groups' connections.
func (rb *relayBench) latencyRun() (relayLatency, error) {
	k := rb.o.relayConns
	var m relayLatency
	for _, c := range rb.clients[:2] {
		if _, err := c.call(command{Cmd: "reset"}); err != nil {
			return m, err
		}
	}
	m.sent = publish(rb.rdb, rb.o.relayRate, rb.o.duration, func(i int) string {
		if i%2 == 0 {
			return "notify:" + rb.relayed[(i/2)%k]
		}
		return "notify:" + rb.direct[(i/2)%k]
	})
	time.Sleep(time.Second)
	var err error
	if m.rr, err = rb.clients[0].call(command{Cmd: "report"}); err != nil {
		return m, err
	}
	if m.dr, err = rb.clients[1].call(command{Cmd: "report"}); err != nil {
		return m, err
	}
	info("relay latency run: published %d, relayed clients got %d, direct clients got %d", m.sent, m.rr.Received, m.dr.Received)
	for _, c := range rb.clients[:2] {
		if _, err := c.call(command{Cmd: "close"}); err != nil {
			return m, err
		}
	}
	return m, nil
}

// printRelayFigures prints the relay run's figures for k relayed
// connections.
func printRelayFigures(k int, idle relayIdle, lat relayLatency) {
	pr, pd := percentile(lat.rr.Hist, 0.99), percentile(lat.dr.Hist, 0.99)
	figure("relay_rss_per_connection", float64(idle.rss1-idle.rss0)/float64(k), "bytes")
	figure("relay_goroutines_added", idle.g1-idle.g0, "goroutines")
	figure("relay_p99_direct", pd, "ms")
	figure("relay_p99_relayed", pr, "ms")
	figure("relay_p99_added", pr-pd, "ms")
	figure("relay_lost", float64(int64(lat.sent)-lat.rr.Received-lat.dr.Received), "messages")
}

// apiRun measures Publish through Twirp (protobuf) in batches of 1,000
// targets, accepted end to end (pipelined into Redis); suffix is appended
// to the figure's name.
func apiRun(o options, n *notifyProc, suffix string) error {
	const batch, workers = 1000, 4
	ids := make([]string, batch)
	for i := range ids {
		ids[i] = "api-user-" + strconv.Itoa(i)
	}
	cl := notifypb.NewNotifyServiceProtobufClient("http://"+n.addr, &http.Client{Timeout: 10 * time.Second})
	ctx, err := twirp.WithHTTPRequestHeaders(context.Background(), http.Header{"Authorization": {"Bearer " + apiKey}})
	if err != nil {
		return err
	}
	var targets atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(o.duration / 2)
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := &notifypb.PublishRequest{UserIds: ids, Payload: []byte("api benchmark payload")}
			for time.Now().Before(deadline) {
				resp, err := cl.Publish(ctx, req)
				if err != nil {
					firstErr.CompareAndSwap(nil, err.Error())
					return
				}
				targets.Add(int64(resp.Targets))
			}
		}()
	}
	wg.Wait()
	if e, ok := firstErr.Load().(string); ok {
		return fmt.Errorf("API publish: %s", e)
	}
	figure("api_publish_targets_per_second"+suffix, float64(targets.Load())/time.Since(start).Seconds(), "targets/s")
	return nil
}

// waitRingMembers polls /cluster until the node's ring has want members.
func (p *notifyProc) waitRingMembers(want int) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := p.web.Get("http://" + p.addr + "/cluster"); err == nil {
			var st struct {
				Ring struct {
					Members []string `json:"members"`
				} `json:"ring"`
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if json.Unmarshal(b, &st) == nil && len(st.Ring.Members) == want {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s: ring never reached %d members", p.addr, want)
}

// protocolsRun measures what an idle Phoenix socket (joined to its user) and
// an idle event stream cost, like the /notify/ws figure of the first run.
func protocolsRun(o options, redisAddr string, clients []*clientProc2) error {
	k := o.relayConns
	for i, p := range []struct{ proto, path, prefix string }{
		{"phoenix", "/pubsub/websocket?vsn=2.0.0", "phx-"},
		{"sse", "/notify/sse", "sse-"},
	} {
		// A fresh node each: memory another run freed would hide the cost.
		n, err := startNotify(o.notify, redisAddr, nodeOpts{name: "bench-" + p.proto, ip: fmt.Sprintf("127.0.0.%d", 22+i)})
		if err != nil {
			return err
		}
		users := make([]string, k)
		for i := range users {
			users[i] = p.prefix + strconv.Itoa(i)
		}
		rss0, g0 := n.steadyRSS(), n.goroutines()
		url := "ws://" + n.addr + p.path
		if p.proto == "sse" {
			url = "http://" + n.addr + p.path
		}
		c := clients[2%len(clients)]
		rep, err := c.call(command{Cmd: "connect", Proto: p.proto, URL: url, Src: c.src, Users: users, Secret: secret, Concurrency: o.concurrency})
		if err != nil || rep.Failed > 0 {
			n.stop()
			return fmt.Errorf("%s clients: %v %+v", p.proto, err, rep)
		}
		time.Sleep(2 * time.Second)
		rss1, g1 := n.steadyRSS(), n.goroutines()
		info("%s: %d idle connections: rss %s -> %s, goroutines %.0f -> %.0f", p.proto, k, mib(rss0), mib(rss1), g0, g1)
		figure(p.proto+"_idle_rss_per_connection", float64(rss1-rss0)/float64(k), "bytes")
		figure(p.proto+"_goroutines_added", g1-g0, "goroutines")
		_, err = c.call(command{Cmd: "close"})
		n.stop()
		if err != nil {
			return err
		}
	}
	return nil
}

//go:build linux

package node

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/notify-dev/notify/internal/await"
)

// maxAccepts is the most Accepts the guarded listener can make in a window
// of d while it backs off: its waits double from acceptBackoffMin, and
// wherever the window starts in the episode they are at least that long.
func maxAccepts(d time.Duration) int {
	n, sum, wait := 1, time.Duration(0), acceptBackoffMin
	for sum+wait <= d {
		sum += wait
		n++
		wait = min(2*wait, acceptBackoffMax)
	}
	return n
}

// TestAcceptWaitsOutDescriptorShortage runs a node out of descriptors for
// real (in a process of its own, whose open files limit is lowered): its
// accept loop backs off instead of spinning, its clients are still served,
// and once clients leave, new ones connect.
func TestAcceptWaitsOutDescriptorShortage(t *testing.T) {
	p := startNodeProcess(t, time.Minute) // idle connections stay until the test closes them
	held, err := dialProcess(t, p.addr, "held")
	if err != nil {
		t.Fatal(err)
	}
	held.handshake("held")
	const room = 20
	p.call("nofile "+strconv.Itoa(room), "nofile")
	// Idle connections take every descriptor left; the rest wait in the
	// kernel's accept queue.
	var idle []net.Conn
	for range room + 30 {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	await.True(t, "accepting paused", func() bool { return p.stats().Paused == 1 })
	s0, t0 := p.stats(), time.Now()
	p.publish("notify:held", "still-served")
	if got := held.readString(); got != "still-served" {
		t.Fatalf("the open client got %q", got)
	}
	await.True(t, "eight more accept errors", func() bool { return p.stats().AcceptErrors >= s0.AcceptErrors+8 })
	s1, window := p.stats(), time.Since(t0)
	tries, cpu := int(s1.AcceptErrors-s0.AcceptErrors), s1.CPU-s0.CPU
	t.Logf("paused for %s: %d failed accepts (at most %d with the backoff), %s CPU", window, tries, maxAccepts(window), cpu)
	if tries > maxAccepts(window) {
		t.Errorf("%d accepts in %s: the loop does not back off", tries, window)
	}
	if cpu > window/4 {
		t.Errorf("the node used %s of CPU in %s while out of descriptors", cpu, window)
	}
	for _, c := range idle {
		c.Close()
	}
	closed := time.Now()
	await.True(t, "accepting resumed", func() bool { return p.stats().Paused == 0 })
	t.Logf("accepting resumed %s after the idle connections closed", time.Since(closed))
	c, err := dialProcess(t, p.addr, "after")
	if err != nil {
		t.Fatalf("a new client after the shortage: %v", err)
	}
	c.handshake("after")
	p.publish("notify:after", "hello")
	if got := c.readString(); got != "hello" {
		t.Fatalf("the new client got %q", got)
	}
}

package redistest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/notify-dev/notify/internal/await"
)

func TestStartRestartStop(t *testing.T) {
	s := Start(t)
	c := s.Client(t)
	ctx := context.Background()

	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	// No persistence: the snapshot settings are off.
	save, err := c.ConfigGet(ctx, "save").Result()
	if err != nil {
		t.Fatalf("CONFIG GET save: %v", err)
	}
	if save["save"] != "" {
		t.Errorf("save = %q, want empty", save["save"])
	}
	aof, err := c.ConfigGet(ctx, "appendonly").Result()
	if err != nil {
		t.Fatalf("CONFIG GET appendonly: %v", err)
	}
	if aof["appendonly"] != "no" {
		t.Errorf("appendonly = %q, want no", aof["appendonly"])
	}

	addr := s.Addr
	s.Restart()
	if s.Addr != addr {
		t.Fatalf("Restart moved the server from %s to %s", addr, s.Addr)
	}
	if err := ping(s.Addr); err != nil {
		t.Fatalf("PING after Restart: %v", err)
	}
	// The pooled client reconnects by itself; the data is gone.
	if n, err := c.Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Errorf("EXISTS k after Restart = %d, %v; want 0, nil", n, err)
	}

	s.Stop()
	if err := ping(s.Addr); err == nil {
		t.Fatal("PING answered after Stop")
	}
	s.Stop() // a second Stop does nothing

	// Restart also starts a stopped server.
	s.Restart()
	if err := ping(s.Addr); err != nil {
		t.Fatalf("PING after Restart of a stopped server: %v", err)
	}
}

func TestPauseResume(t *testing.T) {
	s := Start(t)
	s.Pause()
	if err := ping(s.Addr); err == nil {
		t.Fatal("a paused server answered PING")
	}
	s.Resume()
	await.Within(t, 5*time.Second, "a PING answer after Resume", func() bool { return ping(s.Addr) == nil })
}

func TestLog(t *testing.T) {
	s := Start(t)
	if log := s.Log(); !strings.Contains(log, "Ready to accept connections") {
		t.Fatalf("Log() = %q, want the server's start-up lines", log)
	}
	s.Stop()
	if log := s.Log(); !strings.Contains(log, "Ready to accept connections") {
		t.Fatalf("Log() after Stop = %q, want the last run's lines", log)
	}
}

func TestTwoServers(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.Addr == b.Addr {
		t.Fatalf("both servers on %s", a.Addr)
	}
}

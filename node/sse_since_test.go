package node

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestSSELastEventIDOverSince: an EventSource opened with ?since=
// reconnects by itself to that same URL, with a Last-Event-ID further on.
// The header says where it stands: only what came after it is replayed,
// not everything after the URL's since a second time (test/e2e's
// TestHistoryRecovery saw every message between the two again).
func TestSSELastEventIDOverSince(t *testing.T) {
	tn := historyNode(t, nil, nil)
	tok := token(t, "ls", nil, time.Hour)
	first := tn.apiPublish("ls", "one")
	second := tn.apiPublish("ls", "two")
	third := tn.apiPublish("ls", "three")
	req, _ := http.NewRequest(http.MethodGet, tn.url("/notify/sse?since="+first+"&authorization="+tok), nil)
	req.Header.Set("Last-Event-ID", second)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := newSSEReader(resp.Body)
	if ev := r.next(t); ev.event != "connect" {
		t.Fatalf("%+v", ev)
	}
	if ev := r.next(t); ev.event != "state" || !strings.Contains(ev.data, `"recovered":true`) || !strings.Contains(ev.data, third) {
		t.Fatalf("state %+v", ev)
	}
	if ev := r.next(t); ev.id != third || ev.data != "three" {
		t.Fatalf("replayed %+v, want only what came after Last-Event-ID %s: %s", ev, second, third)
	}
	fourth := tn.apiPublish("ls", "four")
	if ev := r.next(t); ev.id != fourth || ev.data != "four" {
		t.Fatalf("live %+v, want %s", ev, fourth)
	}
}

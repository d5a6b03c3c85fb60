package ring

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/buraksezer/consistent"
)

func names(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("notify-%d", i)
	}
	return out
}

func TestLocateAgreesWithConsistent(t *testing.T) {
	cfg := DefaultConfig()
	ms := names(7)
	r, err := New(cfg, ms)
	if err != nil {
		t.Fatal(err)
	}
	cm := make([]consistent.Member, len(ms))
	for i, n := range ms {
		cm[i] = member(n)
	}
	c := consistent.New(cm, consistent.Config{Hasher: hasher{}, PartitionCount: cfg.Partitions, ReplicationFactor: cfg.ReplicationFactor, Load: cfg.Load})
	for i := 0; i < 10000; i++ {
		u := fmt.Sprint("user-", i)
		if got, want := r.Locate(u), c.LocateKey([]byte(u)).String(); got != want {
			t.Fatalf("%s: %s, consistent says %s", u, got, want)
		}
		if got, want := r.Partition(u), c.FindPartitionID([]byte(u)); got != want {
			t.Fatalf("%s: partition %d, consistent says %d", u, got, want)
		}
	}
}

func TestDeterministicWhateverTheOrder(t *testing.T) {
	ms := names(10)
	a, _ := New(DefaultConfig(), ms)
	shuffled := slices.Clone(ms)
	rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	b, _ := New(DefaultConfig(), append(shuffled, ms[0])) // and a duplicate
	if !slices.Equal(a.owner, b.owner) || !slices.Equal(a.members, b.members) {
		t.Fatal("the same members in another order give another ring")
	}
}

func TestEmptyRingAndValidation(t *testing.T) {
	r, err := New(DefaultConfig(), nil)
	if err != nil || r.Locate("u") != "" || r.Owned("x") != 0 {
		t.Fatalf("empty ring: %v", err)
	}
	for _, c := range []Config{{0, 40, 1.25}, {1021, 1, 1.25}, {1021, 40, 1.0}} {
		if _, err := New(c, names(3)); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	if DefaultConfig().Hash() == (Config{Partitions: 1021, ReplicationFactor: 40, Load: 1.25}).Hash() {
		t.Error("different settings, same hash")
	}
}

// stats describes one configuration at one size.
type stats struct {
	min, max    int     // partitions per member
	cv          float64 // coefficient of variation of partitions per member
	movedJoin   float64 // share of users whose owner changes when one member joins
	movedLeave  float64 // ... when one member leaves
	ideal       float64 // 1/(N+1) for a join, 1/N for a leave
	allPartsOwn bool
}

func measure(t testing.TB, cfg Config, n int, users []string) stats {
	r, err := New(cfg, names(n))
	if err != nil {
		t.Fatal(err)
	}
	joined, _ := New(cfg, names(n+1))
	left, _ := New(cfg, names(n)[1:])
	st := stats{min: math.MaxInt, ideal: 1 / float64(n+1), allPartsOwn: true}
	sum, sq := 0.0, 0.0
	for _, m := range r.members {
		o := r.Owned(m)
		st.min, st.max = min(st.min, o), max(st.max, o)
		sum += float64(o)
		sq += float64(o) * float64(o)
	}
	mean := sum / float64(n)
	st.cv = math.Sqrt(sq/float64(n)-mean*mean) / mean
	if int(sum) != cfg.Partitions {
		st.allPartsOwn = false
	}
	var mj, ml int
	for _, u := range users {
		o := r.Locate(u)
		if joined.Locate(u) != o {
			mj++
		}
		if left.Locate(u) != o {
			ml++
		}
	}
	st.movedJoin = float64(mj) / float64(len(users))
	st.movedLeave = float64(ml) / float64(len(users))
	return st
}

// TestDistribution is the measurement behind DefaultConfig: for 3, 10, 30 and
// 100 members it prints the spread of partitions per member and the share of
// users that move when one member joins or leaves (ideal: about 1/N), and
// checks the bounds of DefaultConfig. The other candidates are measured when
// NOTIFY_RING_TABLE=path asks for the table (written there; see
// testdata/distribution.txt); -v shows it.
func TestDistribution(t *testing.T) {
	users := make([]string, 100000)
	for i := range users {
		users[i] = fmt.Sprintf("user-%d", i)
	}
	candidates := []Config{DefaultConfig()}
	if os.Getenv("NOTIFY_RING_TABLE") != "" {
		candidates = []Config{
			{1021, 40, 1.25},
			{2039, 40, 1.25},
			{2039, 200, 1.25},
			{4093, 40, 1.25},
			DefaultConfig(),
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-22s %5s %5s %5s %6s %10s %10s %8s\n", "partitions/rf/load", "N", "min", "max", "cv", "join-moves", "leave-moves", "ideal")
	for _, cfg := range candidates {
		for _, n := range []int{3, 10, 30, 100} {
			st := measure(t, cfg, n, users)
			fmt.Fprintf(&b, "%-22s %5d %5d %5d %6.3f %9.2f%% %9.2f%% %7.2f%%\n",
				fmt.Sprintf("%d/%d/%.2f", cfg.Partitions, cfg.ReplicationFactor, cfg.Load), n, st.min, st.max, st.cv,
				100*st.movedJoin, 100*st.movedLeave, 100/float64(n))
			if !st.allPartsOwn {
				t.Errorf("%+v N=%d: not every partition owned", cfg, n)
			}
			if cfg == DefaultConfig() {
				avg := float64(cfg.Partitions) / float64(n)
				if float64(st.max) > math.Ceil(avg*cfg.Load) {
					t.Errorf("N=%d: busiest member owns %d partitions, above the bound %.0f", n, st.max, math.Ceil(avg*cfg.Load))
				}
				// A change should move about 1/N of the users; bounded loads
				// add a little, never double it.
				if st.movedJoin > 2/float64(n+1) || st.movedLeave > 2/float64(n) {
					t.Errorf("N=%d: join moves %.1f%%, leave %.1f%%: far above 1/N", n, 100*st.movedJoin, 100*st.movedLeave)
				}
			}
		}
	}
	t.Log("\n" + b.String())
	if p := os.Getenv("NOTIFY_RING_TABLE"); p != "" {
		_ = os.WriteFile(p, []byte(b.String()), 0o644)
	}
}

func BenchmarkLocate(b *testing.B) {
	r, _ := New(DefaultConfig(), names(10))
	users := make([]string, 1024)
	for i := range users {
		users[i] = fmt.Sprintf("user-%d", i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		_ = r.Locate(users[i&1023])
		i++
	}
}

func BenchmarkBuild(b *testing.B) {
	for _, n := range []int{3, 30} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				_, _ = New(DefaultConfig(), names(n))
			}
		})
	}
}

package broker

import "testing"

// FuzzParseCursor: any client cursor parses or is refused without a panic,
// and a parsed cursor's string form parses back to it.
func FuzzParseCursor(f *testing.F) {
	for _, s := range []string{"1764590000123456:7", "0:1764590000123", "", ":", "a:0", "x:18446744073709551616", "e:1:2", "e :1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCursor(s)
		if err != nil {
			return
		}
		again, err := ParseCursor(c.String())
		if err != nil || again != c {
			t.Fatalf("%q -> %+v -> %q -> %+v %v", s, c, c.String(), again, err)
		}
	})
}

package pages

import (
	"bytes"
	"path/filepath"
	"testing"
)

// TestDemoPageEscapes guards the page's one safety rule: what it shows is
// set as text, never parsed as HTML.
func TestDemoPageEscapes(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	staticFiles := p.files
	for name, f := range staticFiles {
		if filepath.Ext(name) != ".js" {
			continue
		}
		for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
			if bytes.Contains(f.body, []byte(bad)) {
				t.Errorf("static/%s uses %s", name, bad)
			}
		}
	}
	if staticFiles["index.html"] == nil || staticFiles["demo.js"] == nil || staticFiles["demo.css"] == nil {
		t.Fatal("embedded files missing")
	}
	if bytes.Contains(staticFiles["index.html"].body, []byte(" style=")) || bytes.Contains(staticFiles["index.html"].body, []byte("<style")) {
		t.Error("index.html has inline style, which the CSP refuses")
	}
}

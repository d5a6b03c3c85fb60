// Package pages serves the demo page (GET /) and its assets (GET
// /static/<file>): plain HTML, CSS and JavaScript embedded in the binary, no
// build step, nothing fetched from elsewhere.
package pages

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"time"
)

//go:embed static
var staticFS embed.FS

// pageCSP lets the page load its own script, style and icon, talk to the
// Twirp API and open WebSockets, and nothing else: no inline script or
// style, no framing, no plugins, no form posts. connect-src names ws: and
// wss: because older browsers do not count a WebSocket to the page's own
// host as 'self'.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// staticFile is one embedded file, ready to serve.
type staticFile struct {
	name  string
	ctype string
	etag  string
	body  []byte
}

// Content types by extension, fixed here rather than taken from the
// system's MIME tables, which differ between machines.
var staticTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
}

// Pages serves the embedded files.
type Pages struct {
	files map[string]*staticFile
}

// New loads the embedded files.
func New() (*Pages, error) {
	files := map[string]*staticFile{}
	entries, err := fs.ReadDir(staticFS, "static")
	if err != nil {
		return nil, fmt.Errorf("demo page: %w", err)
	}
	for _, e := range entries {
		ctype, ok := staticTypes[path.Ext(e.Name())]
		if e.IsDir() || !ok {
			continue
		}
		b, err := staticFS.ReadFile("static/" + e.Name())
		if err != nil {
			return nil, fmt.Errorf("demo page: %w", err)
		}
		sum := sha256.Sum256(b)
		files[e.Name()] = &staticFile{
			name:  e.Name(),
			ctype: ctype,
			etag:  `"` + hex.EncodeToString(sum[:8]) + `"`,
			body:  b,
		}
	}
	if files["index.html"] == nil {
		return nil, fmt.Errorf("demo page: static/index.html is not embedded")
	}
	return &Pages{files: files}, nil
}

// ServePage is GET / exactly: the demo page. The token travels in the
// page's own URL (?token=), read by the script; the server ignores it.
func (p *Pages) ServePage(w http.ResponseWriter, r *http.Request) {
	serve(w, r, p.files["index.html"])
}

// ServeStatic is GET /static/<file>: the page's script, style and icon.
func (p *Pages) ServeStatic(w http.ResponseWriter, r *http.Request) {
	f := p.files[r.PathValue("file")]
	if f == nil || f.name == "index.html" {
		http.NotFound(w, r)
		return
	}
	serve(w, r, f)
}

func serve(w http.ResponseWriter, r *http.Request, f *staticFile) {
	h := w.Header()
	h.Set("Content-Type", f.ctype)
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	// The page URL may carry a token: never send it on as a Referer.
	h.Set("Referrer-Policy", "no-referrer")
	// A dev page: always revalidate (a cheap 304 by ETag), so a rebuilt
	// binary's page shows at once.
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", f.etag)
	http.ServeContent(w, r, f.name, time.Time{}, bytes.NewReader(f.body))
}

package admission

import (
	"net/http"
	"net/url"
)

// Query is r's query, parsed once per GET request: the handshake's steps
// (topics, resume, envelope) each read it, and every url.Query call parses
// the query again into a new map. The parse is the one net/http's
// ParseForm keeps in r.Form, which for a GET holds the query alone (as
// url.Query, a malformed pair is left out). Other methods get r.URL.Query:
// their Form would hold the body's fields too.
func Query(r *http.Request) url.Values {
	if r.Method != http.MethodGet {
		return r.URL.Query()
	}
	if r.Form == nil {
		_ = r.ParseForm()
	}
	return r.Form
}

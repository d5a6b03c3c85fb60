package auth

import (
	"encoding/json"

	"github.com/golang-jwt/jwt/v5"
)

// parseClaims reads a token's payload into the MapClaims golang-jwt's
// parse makes of it (encoding/json with UseNumber), for payloads in a
// subset of JSON that covers what token libraries write:
//   - one object, whitespace around it;
//   - strings of printable ASCII without escapes, as keys and values;
//   - numbers (kept as their text, a json.Number), true, false, null;
//   - arrays of those (not of arrays or objects).
//
// It reports false for anything else, valid JSON or not: the full parse
// reads it then. A later duplicate key wins, as in encoding/json.
func parseClaims(b []byte) (jwt.MapClaims, bool) {
	s := claimScanner{b: b}
	s.space()
	if !s.take('{') {
		return nil, false
	}
	mc := make(jwt.MapClaims, 8)
	s.space()
	if s.take('}') {
		return mc, s.end()
	}
	for {
		s.space()
		key, ok := s.str()
		if !ok {
			return nil, false
		}
		s.space()
		if !s.take(':') {
			return nil, false
		}
		s.space()
		v, ok := s.value(true)
		if !ok {
			return nil, false
		}
		mc[key] = v
		s.space()
		if s.take('}') {
			return mc, s.end()
		}
		if !s.take(',') {
			return nil, false
		}
	}
}

// claimScanner reads b from i on.
type claimScanner struct {
	b []byte
	i int
}

// end reports whether only whitespace is left.
func (s *claimScanner) end() bool {
	s.space()
	return s.i == len(s.b)
}

func (s *claimScanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// take consumes c if it is next.
func (s *claimScanner) take(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// value reads a string, number, literal or (when arrays is set) an array
// of those.
func (s *claimScanner) value(arrays bool) (any, bool) {
	if s.i >= len(s.b) {
		return nil, false
	}
	switch c := s.b[s.i]; {
	case c == '"':
		return s.str()
	case c == '-' || c >= '0' && c <= '9':
		return s.number()
	case c == '[' && arrays:
		return s.array()
	}
	for _, lit := range []struct {
		text string
		v    any
	}{{"true", true}, {"false", false}, {"null", nil}} {
		if len(s.b)-s.i >= len(lit.text) && string(s.b[s.i:s.i+len(lit.text)]) == lit.text {
			s.i += len(lit.text)
			return lit.v, true
		}
	}
	return nil, false
}

// str reads a string of printable ASCII without escapes.
func (s *claimScanner) str() (string, bool) {
	if !s.take('"') {
		return "", false
	}
	start := s.i
	for ; s.i < len(s.b); s.i++ {
		switch c := s.b[s.i]; {
		case c == '"':
			v := string(s.b[start:s.i])
			s.i++
			return v, true
		case c == '\\' || c < 0x20 || c > 0x7e:
			return "", false // an escape, a control byte or UTF-8: the full parse's
		}
	}
	return "", false
}

// number reads a JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *claimScanner) number() (json.Number, bool) {
	start := s.i
	s.take('-')
	switch {
	case s.take('0'):
	case s.digits() == 0:
		return "", false
	}
	if s.take('.') && s.digits() == 0 {
		return "", false
	}
	if s.take('e') || s.take('E') {
		if !s.take('+') {
			s.take('-')
		}
		if s.digits() == 0 {
			return "", false
		}
	}
	return json.Number(s.b[start:s.i]), true
}

// digits consumes a run of decimal digits and returns its length.
func (s *claimScanner) digits() int {
	start := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	return s.i - start
}

// array reads an array of strings, numbers and literals.
func (s *claimScanner) array() ([]any, bool) {
	s.take('[')
	list := []any{}
	s.space()
	if s.take(']') {
		return list, true
	}
	for {
		s.space()
		v, ok := s.value(false)
		if !ok {
			return nil, false
		}
		list = append(list, v)
		s.space()
		if s.take(']') {
			return list, true
		}
		if !s.take(',') {
			return nil, false
		}
	}
}

package phxtoken

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxUserIDLen matches the JWT verifier's limit in package auth.
const maxUserIDLen = 512

// decodeMessage reads the signed payload. plug_crypto 2.x's encode/2
// (lib/plug/crypto.ex) writes :erlang.term_to_binary({data, signed_at_ms,
// max_age_secs}); its decode/2 still reads {data, signed} (plug_crypto 1.1)
// and %{data: _, signed: _} (Phoenix before plug_crypto), but no current
// release writes those, and such tokens are years past any max_age, so they
// are refused here.
func decodeMessage(payload []byte) (data term, signedMs int64, err error) {
	t, err := decodeTerm(payload)
	if err != nil {
		return term{}, 0, malformed(err.Error())
	}
	if t.kind != kindTuple || len(t.elems) != 3 {
		return term{}, 0, errNotMessage
	}
	signed, maxAge := t.elems[1], t.elems[2]
	if signed.kind != kindInt || signed.bigInt() {
		return term{}, 0, errSignedAt
	}
	// The token's own max_age is overridden by the configured one, as
	// Plug.Crypto.verify/4 does when given :max_age; it may be an integer,
	// a float or :infinity (Phoenix.Token.sign's max_age: :infinity).
	switch {
	case maxAge.kind == kindInt, maxAge.kind == kindFloat:
	case maxAge.kind == kindAtom && maxAge.s == "infinity":
	default:
		return term{}, 0, errMaxAge
	}
	return t.elems[0], signed.n, nil
}

// userID reads the user id from a token's data: a string or an integer,
// as Phoenix.Token.sign(conn, salt, user.id) makes, or a map holding one
// under user_id or id (as an atom or a string key); user_id wins.
func userID(data term) (string, error) {
	switch data.kind {
	case kindBinary, kindInt:
		return idValue(data)
	case kindMap:
		for _, name := range []string{"user_id", "id"} {
			v, ok, err := mapValue(data, name)
			if err != nil {
				return "", err
			}
			if ok {
				return idValue(v)
			}
		}
		return "", errNoID
	}
	return "", errDataType
}

// mapValue finds the value of key name, an atom or a binary. Both at once
// are different keys to Erlang, and which one was meant is unknown.
func mapValue(m term, name string) (term, bool, error) {
	var found term
	ok := false
	for i := 0; i+1 < len(m.elems); i += 2 {
		k := m.elems[i]
		if (k.kind != kindAtom && k.kind != kindBinary) || k.s != name {
			continue
		}
		if ok {
			return term{}, false, errAmbiguousID
		}
		found, ok = m.elems[i+1], true
	}
	return found, ok, nil
}

// idValue turns a binary or an integer into a user id: integers as exact
// decimals, binaries as UTF-8 text that is not blank.
func idValue(v term) (string, error) {
	var id string
	switch {
	case v.kind == kindBinary:
		if !utf8.ValidString(v.s) {
			return "", errIDNotUTF8
		}
		id = v.s
	case v.bigInt():
		id = v.s
	case v.kind == kindInt:
		id = strconv.FormatInt(v.n, 10)
	default:
		return "", errIDType
	}
	if strings.TrimSpace(id) == "" {
		return "", errIDEmpty
	}
	if len(id) > maxUserIDLen {
		return "", errIDTooLong
	}
	return id, nil
}

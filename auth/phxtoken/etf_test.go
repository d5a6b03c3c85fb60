package phxtoken

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/big"
	"reflect"
	"strings"
	"testing"
)

// Term builders for the tests.
func tInt(n int64) term         { return term{kind: kindInt, n: n} }
func tBig(dec string) term      { return term{kind: kindInt, s: dec} }
func tBin(s string) term        { return term{kind: kindBinary, s: s} }
func tAtom(s string) term       { return term{kind: kindAtom, s: s} }
func tFloat(f float64) term     { return term{kind: kindFloat, n: int64(math.Float64bits(f))} }
func tTuple(elems ...term) term { return term{kind: kindTuple, elems: elems} }
func tList(elems ...term) term  { return term{kind: kindList, elems: elems} }
func tMap(kvs ...term) term     { return term{kind: kindMap, elems: kvs} }
func etf(body ...[]byte) []byte { return append([]byte{etfVersion}, bytes.Join(body, nil)...) }
func u32(n uint32) []byte       { return binary.BigEndian.AppendUint32(nil, n) }
func encode(t term) []byte      { return etf(encodeBody(t)) }
func message(data term, signedMs int64) []byte {
	return encode(tTuple(data, tInt(signedMs), tInt(86400)))
}

// encodeBody writes t as term_to_binary would (UTF-8 atoms, as OTP 26+).
func encodeBody(t term) []byte {
	var b []byte
	switch t.kind {
	case kindInt:
		b = encodeInt(t)
	case kindFloat:
		b = binary.BigEndian.AppendUint64([]byte{tagNewFloat}, uint64(t.n))
	case kindAtom:
		if len(t.s) <= 255 {
			b = append([]byte{tagSmallAtomUTF8, byte(len(t.s))}, t.s...)
		} else {
			b = append(binary.BigEndian.AppendUint16([]byte{tagAtomUTF8}, uint16(len(t.s))), t.s...)
		}
	case kindBinary:
		b = append(append([]byte{tagBinary}, u32(uint32(len(t.s)))...), t.s...)
	case kindString:
		b = append(binary.BigEndian.AppendUint16([]byte{tagString}, uint16(len(t.s))), t.s...)
	case kindList:
		if len(t.elems) == 0 && t.tail == nil {
			return []byte{tagNil}
		}
		b = append([]byte{tagList}, u32(uint32(len(t.elems)))...)
	case kindTuple:
		if len(t.elems) < 256 {
			b = []byte{tagSmallTuple, byte(len(t.elems))}
		} else {
			b = append([]byte{tagLargeTuple}, u32(uint32(len(t.elems)))...)
		}
	case kindMap:
		b = append([]byte{tagMap}, u32(uint32(len(t.elems)/2))...)
	}
	for _, e := range t.elems {
		b = append(b, encodeBody(e)...)
	}
	if t.kind == kindList {
		tail := term{kind: kindList}
		if t.tail != nil {
			tail = *t.tail
		}
		b = append(b, encodeBody(tail)...)
	}
	return b
}

func encodeInt(t term) []byte {
	switch {
	case !t.bigInt() && t.n >= 0 && t.n < 256:
		return []byte{tagSmallInt, byte(t.n)}
	case !t.bigInt() && t.n >= math.MinInt32 && t.n <= math.MaxInt32:
		return append([]byte{tagInt}, u32(uint32(int32(t.n)))...)
	}
	x := big.NewInt(t.n)
	if t.bigInt() {
		x.SetString(t.s, 10)
	}
	sign := byte(0)
	if x.Sign() < 0 {
		sign = 1
	}
	be := new(big.Int).Abs(x).Bytes()
	b := []byte{tagSmallBig, byte(len(be)), sign}
	for i := len(be) - 1; i >= 0; i-- {
		b = append(b, be[i])
	}
	return b
}

// nested wraps data in depth one-element tuples.
func nested(depth int) term {
	t := tBin("deep")
	for range depth {
		t = tTuple(t)
	}
	return t
}

func TestDecodeTerm(t *testing.T) {
	tail := tInt(2)
	for _, tc := range []struct {
		name string
		in   []byte
		want term
	}{
		{"small int", etf([]byte{tagSmallInt, 200}), tInt(200)},
		{"negative int", etf([]byte{tagInt}, u32(0xfffffffe)), tInt(-2)},
		{"big ms", etf([]byte{tagSmallBig, 6, 0, 0, 0xa8, 0xda, 0x76, 0x9b, 0x01}), tInt(1767225600000)},
		{"big min int64", etf([]byte{tagSmallBig, 8, 1, 0, 0, 0, 0, 0, 0, 0, 0x80}), tInt(math.MinInt64)},
		{"big 2^63", etf([]byte{tagSmallBig, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0x80}), tBig("9223372036854775808")},
		{"big leading zeros", etf([]byte{tagSmallBig, 10, 1, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0}), tInt(-5)},
		{"big zero length", etf([]byte{tagSmallBig, 0, 0}), tInt(0)},
		{"latin-1 atom", etf([]byte{tagAtom, 0, 2, 'j', 0xfc}), tAtom("jü")},
		{"small latin-1 atom", etf([]byte{tagSmallAtom, 2, 'i', 'd'}), tAtom("id")},
		{"utf8 atom", etf([]byte{tagAtomUTF8, 0, 3, 'j', 0xc3, 0xbc}), tAtom("jü")},
		{"float", etf(encodeBody(tFloat(2.5))), tFloat(2.5)},
		{"charlist", etf([]byte{tagString, 0, 2, 'h', 'i'}), term{kind: kindString, s: "hi"}},
		{"nil", etf([]byte{tagNil}), tList()},
		{"improper list", etf([]byte{tagList}, u32(1), []byte{tagSmallInt, 1, tagSmallInt, 2}), term{kind: kindList, elems: []term{tInt(1)}, tail: &tail}},
		{"large tuple", etf([]byte{tagLargeTuple}, u32(1), []byte{tagNil}), tTuple(tList())},
		{"map", encode(tMap(tAtom("id"), tBin("x"))), tMap(tAtom("id"), tBin("x"))},
		{"depth 32", encode(nested(32)), nested(32)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeTerm(tc.in)
			if err != nil {
				t.Fatalf("decodeTerm: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v; want %+v", got, tc.want)
			}
		})
	}
}

// badTerms are refused by the decoder, each with the error named.
func badTerms() []struct {
	name string
	in   []byte
	want error
} {
	ff := u32(0xffffffff)
	return []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, errTruncated},
		{"version only", []byte{etfVersion}, errTruncated},
		{"version 130", []byte{130, tagNil}, errVersion},
		{"compressed", etf([]byte{tagCompressed}, u32(5), []byte{0x78, 0x9c}), errCompressed},
		{"trailing", etf([]byte{tagNil, tagNil}), errTrailing},
		{"binary length 0xFFFFFFFF", etf([]byte{tagBinary}, ff, []byte("abc")), errLength},
		{"binary short", etf([]byte{tagBinary}, u32(4), []byte("abc")), errLength},
		{"map arity 0xFFFFFFFF", etf([]byte{tagMap}, ff, []byte{tagNil, tagNil}), errLength},
		{"map arity beyond data", etf([]byte{tagMap}, u32(2), []byte{tagNil, tagNil, tagNil}), errLength},
		{"large tuple arity 0xFFFFFFFF", etf([]byte{tagLargeTuple}, ff, []byte{tagNil}), errLength},
		{"small tuple arity beyond data", etf([]byte{tagSmallTuple, 255, tagNil}), errLength},
		{"list length 0xFFFFFFFF", etf([]byte{tagList}, ff, []byte{tagNil}), errLength},
		{"list without tail", etf([]byte{tagList}, u32(1), []byte{tagNil}), errTruncated},
		{"string length beyond data", etf([]byte{tagString, 0xff, 0xff, 'a'}), errTruncated},
		{"atom length beyond data", etf([]byte{tagAtomUTF8, 0xff, 0xff, 'a'}), errTruncated},
		{"atom 256 latin-1 chars", etf([]byte{tagAtom, 1, 0}, bytes.Repeat([]byte{'a'}, 256)), errAtom},
		{"atom 256 utf8 chars", etf([]byte{tagAtomUTF8, 1, 0}, bytes.Repeat([]byte{'a'}, 256)), errAtom},
		{"atom not utf8", etf([]byte{tagSmallAtomUTF8, 1, 0xff}), errAtom},
		{"big 65 bytes", etf([]byte{tagSmallBig, 65, 0}, make([]byte, 65)), errBigInt},
		{"big 255 bytes short", etf([]byte{tagSmallBig, 255, 0, 1}), errBigInt},
		{"big sign 2", etf([]byte{tagSmallBig, 1, 2, 1}), errBigSign},
		{"big truncated", etf([]byte{tagSmallBig, 4, 0, 1}), errTruncated},
		{"int truncated", etf([]byte{tagInt, 0, 0}), errTruncated},
		{"float truncated", etf([]byte{tagNewFloat, 0, 0}), errTruncated},
		{"depth 33", encode(nested(33)), errDepth},
		{"deep lists", etf(bytes.Repeat(append([]byte{tagList}, u32(1)...), 10000)), errDepth},
		{"large big", etf([]byte{111}, u32(1), []byte{0, 1}), errTag},
		{"pid", etf([]byte{88, tagSmallAtomUTF8, 1, 'n', 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0}), errTag},
		{"bitstring", etf([]byte{77}, u32(1), []byte{3, 0xe0}), errTag},
		{"old float", etf([]byte{99}, make([]byte, 31)), errTag},
		{"local", etf([]byte{121, 0}), errTag},
	}
}

func TestDecodeTermRefuses(t *testing.T) {
	for _, tc := range badTerms() {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeTerm(tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("decodeTerm = %+v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

// TestDecodeTermTruncated: every proper prefix of a term is refused.
func TestDecodeTermTruncated(t *testing.T) {
	full := message(tMap(tAtom("user_id"), tBin("alice"), tBin("roles"), tList(tAtom("a"), tFloat(1))), 1767225600000)
	if _, err := decodeTerm(full); err != nil {
		t.Fatal(err)
	}
	for i := range full {
		if _, err := decodeTerm(full[:i]); err == nil {
			t.Errorf("prefix of %d bytes accepted", i)
		}
	}
}

// FuzzDecodeTerm: no input panics, and what decodes encodes back to bytes
// that decode to the same term.
func FuzzDecodeTerm(f *testing.F) {
	for _, v := range loadVectors(f) {
		f.Add(payloadOf(f, v.Token))
	}
	for _, tc := range badTerms() {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := decodeTerm(in)
		if err != nil {
			if strings.Contains(err.Error(), "%") {
				t.Fatalf("error %q is not fixed text", err)
			}
			return
		}
		again, err := decodeTerm(encode(got))
		if err != nil {
			t.Fatalf("re-encoded %+v does not decode: %v", got, err)
		}
		if !reflect.DeepEqual(got, again) {
			t.Fatalf("round trip: %+v became %+v", got, again)
		}
	})
}

package phxtoken

import (
	"encoding/binary"
	"errors"
	"math"
	"math/big"
	"unicode/utf8"
)

// The External Term Format tags the decoder knows (erts's "External Term
// Format" chapter). What :erlang.term_to_binary writes for an Elixir
// token's data is covered: integers, floats, atoms, binaries, lists, charlists,
// tuples and maps. Pids, ports, references, funs, bitstrings and
// LARGE_BIG_EXT are refused: no user id is one, and Plug.Crypto refuses funs
// itself.
const (
	etfVersion       = 131
	tagNewFloat      = 70
	tagCompressed    = 80
	tagSmallInt      = 97
	tagInt           = 98
	tagAtom          = 100
	tagSmallTuple    = 104
	tagLargeTuple    = 105
	tagNil           = 106
	tagString        = 107
	tagList          = 108
	tagBinary        = 109
	tagSmallBig      = 110
	tagSmallAtom     = 115
	tagMap           = 116
	tagAtomUTF8      = 118
	tagSmallAtomUTF8 = 119
)

const (
	// maxDepth bounds nesting, so a hostile term cannot exhaust the stack.
	maxDepth = 32
	// maxBigBytes bounds SMALL_BIG_EXT magnitudes: 64 bytes is 155 decimal
	// digits, more than any id; a millisecond timestamp needs 6.
	maxBigBytes = 64
	// maxAtomChars is Erlang's own limit on an atom's length.
	maxAtomChars = 255
)

// The decoder's errors: fixed text, never the term's content.
var (
	errTruncated  = errors.New("term truncated")
	errVersion    = errors.New("term version not 131")
	errCompressed = errors.New("compressed term not supported")
	errTag        = errors.New("term type not supported")
	errDepth      = errors.New("term nested too deeply")
	errLength     = errors.New("term length exceeds its data")
	errBigInt     = errors.New("integer too large")
	errBigSign    = errors.New("integer sign malformed")
	errAtom       = errors.New("atom malformed")
	errTrailing   = errors.New("trailing bytes after term")
)

type kind uint8

const (
	kindInt    kind = iota + 1 // n, or s (decimal) when it does not fit an int64
	kindFloat                  // n holds the IEEE 754 bits
	kindAtom                   // s: the name in UTF-8
	kindBinary                 // s: the bytes
	kindString                 // s: the bytes of a charlist sent as STRING_EXT
	kindList                   // elems, and tail when the list is improper
	kindTuple                  // elems
	kindMap                    // elems: key, value, key, value, ...
)

// term is a decoded Erlang term. Atoms stay strings: nothing is interned,
// so a token cannot grow any table.
type term struct {
	kind  kind
	n     int64
	s     string
	elems []term
	tail  *term
}

// bigInt reports whether an integer term is kept as a decimal string.
func (t term) bigInt() bool { return t.kind == kindInt && t.s != "" }

type decoder struct {
	b     []byte
	off   int
	depth int
}

// decodeTerm decodes one uncompressed term, as :erlang.binary_to_term would,
// and refuses bytes after it.
func decodeTerm(b []byte) (term, error) {
	if len(b) == 0 {
		return term{}, errTruncated
	}
	if b[0] != etfVersion {
		return term{}, errVersion
	}
	if len(b) > 1 && b[1] == tagCompressed {
		// term_to_binary(_, [compressed]) (Phoenix.Token's :compressed
		// option): inflating would let a small token expand without bound.
		return term{}, errCompressed
	}
	d := decoder{b: b, off: 1}
	t, err := d.term()
	if err != nil {
		return term{}, err
	}
	if d.off != len(b) {
		return term{}, errTrailing
	}
	return t, nil
}

func (d *decoder) remaining() int { return len(d.b) - d.off }

func (d *decoder) take(n int) ([]byte, error) {
	if n < 0 || n > d.remaining() {
		return nil, errTruncated
	}
	p := d.b[d.off : d.off+n]
	d.off += n
	return p, nil
}

func (d *decoder) u8() (int, error) {
	p, err := d.take(1)
	if err != nil {
		return 0, err
	}
	return int(p[0]), nil
}

func (d *decoder) u16() (int, error) {
	p, err := d.take(2)
	if err != nil {
		return 0, err
	}
	return int(binary.BigEndian.Uint16(p)), nil
}

func (d *decoder) u32() (uint32, error) {
	p, err := d.take(4)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(p), nil
}

// count reads a 32-bit element count and checks that per bytes each could
// still follow, before anything is allocated for them.
func (d *decoder) count(per int) (int, error) {
	n, err := d.u32()
	if err != nil {
		return 0, err
	}
	if uint64(n)*uint64(per) > uint64(d.remaining()) {
		return 0, errLength
	}
	return int(n), nil
}

func (d *decoder) term() (term, error) {
	tag, err := d.u8()
	if err != nil {
		return term{}, err
	}
	switch tag {
	case tagSmallInt:
		n, err := d.u8()
		return term{kind: kindInt, n: int64(n)}, err
	case tagInt:
		n, err := d.u32()
		return term{kind: kindInt, n: int64(int32(n))}, err
	case tagSmallBig:
		return d.smallBig()
	case tagNewFloat:
		p, err := d.take(8)
		if err != nil {
			return term{}, err
		}
		return term{kind: kindFloat, n: int64(binary.BigEndian.Uint64(p))}, nil
	case tagAtom, tagSmallAtom, tagAtomUTF8, tagSmallAtomUTF8:
		return d.atom(tag)
	case tagBinary, tagString:
		return d.bytesTerm(tag)
	case tagNil:
		return term{kind: kindList}, nil
	case tagSmallTuple, tagLargeTuple, tagList, tagMap:
		return d.container(tag)
	}
	return term{}, errTag
}

// smallBig decodes SMALL_BIG_EXT: a length, a sign byte and the magnitude
// in little-endian bytes. term_to_binary uses it for any integer beyond
// 32 bits, so for every millisecond timestamp.
func (d *decoder) smallBig() (term, error) {
	n, err := d.u8()
	if err != nil {
		return term{}, err
	}
	sign, err := d.u8()
	if err != nil {
		return term{}, err
	}
	if sign > 1 {
		return term{}, errBigSign
	}
	if n > maxBigBytes {
		return term{}, errBigInt
	}
	mag, err := d.take(n)
	if err != nil {
		return term{}, err
	}
	if n <= 8 {
		var u uint64
		for i := n - 1; i >= 0; i-- {
			u = u<<8 | uint64(mag[i])
		}
		switch {
		case sign == 0 && u <= math.MaxInt64:
			return term{kind: kindInt, n: int64(u)}, nil
		case sign == 1 && u <= 1<<63:
			return term{kind: kindInt, n: int64(-u)}, nil // -u wraps to the two's complement
		}
	}
	be := make([]byte, n)
	for i, c := range mag {
		be[n-1-i] = c
	}
	x := new(big.Int).SetBytes(be)
	if sign == 1 {
		x.Neg(x)
	}
	if x.IsInt64() {
		// Leading zero bytes: binary_to_term accepts them too.
		return term{kind: kindInt, n: x.Int64()}, nil
	}
	return term{kind: kindInt, s: x.String()}, nil
}

// atom decodes the four atom tags. ATOM_EXT and SMALL_ATOM_EXT hold
// Latin-1 (OTP 25 and older write them for such atoms), the others UTF-8
// (OTP 26 and newer).
func (d *decoder) atom(tag int) (term, error) {
	var n int
	var err error
	if tag == tagSmallAtom || tag == tagSmallAtomUTF8 {
		n, err = d.u8()
	} else {
		n, err = d.u16()
	}
	if err != nil {
		return term{}, err
	}
	p, err := d.take(n)
	if err != nil {
		return term{}, err
	}
	if tag == tagAtom || tag == tagSmallAtom {
		if n > maxAtomChars {
			return term{}, errAtom
		}
		return term{kind: kindAtom, s: latin1(p)}, nil
	}
	if !utf8.Valid(p) || utf8.RuneCount(p) > maxAtomChars {
		return term{}, errAtom
	}
	return term{kind: kindAtom, s: string(p)}, nil
}

func latin1(p []byte) string {
	r := make([]rune, len(p))
	for i, c := range p {
		r[i] = rune(c)
	}
	return string(r)
}

// bytesTerm decodes BINARY_EXT (32-bit length) and STRING_EXT (a charlist
// of bytes, 16-bit length).
func (d *decoder) bytesTerm(tag int) (term, error) {
	var n int
	var err error
	k := kindBinary
	if tag == tagString {
		k = kindString
		n, err = d.u16()
	} else {
		n, err = d.count(1)
	}
	if err != nil {
		return term{}, err
	}
	p, err := d.take(n)
	if err != nil {
		return term{}, err
	}
	return term{kind: k, s: string(p)}, nil
}

// container decodes tuples, lists and maps, whose elements are terms.
func (d *decoder) container(tag int) (term, error) {
	if d.depth >= maxDepth {
		return term{}, errDepth
	}
	d.depth++
	defer func() { d.depth-- }()

	var n int
	var err error
	t := term{kind: kindTuple}
	switch tag {
	case tagSmallTuple:
		n, err = d.u8()
	case tagLargeTuple:
		n, err = d.count(1)
	case tagList:
		t.kind = kindList
		n, err = d.count(1)
	case tagMap:
		t.kind = kindMap
		n, err = d.count(2)
		n *= 2
	}
	if err != nil {
		return term{}, err
	}
	if n > d.remaining() {
		return term{}, errLength
	}
	if n > 0 {
		// An empty LIST_EXT is [] as NIL_EXT is: the same term.
		t.elems = make([]term, n)
	}
	for i := range t.elems {
		if t.elems[i], err = d.term(); err != nil {
			return term{}, err
		}
	}
	if tag == tagList {
		return d.listTail(t)
	}
	return t, nil
}

// listTail reads a LIST_EXT's tail: NIL_EXT for a proper list, any term
// for an improper one.
func (d *decoder) listTail(t term) (term, error) {
	tail, err := d.term()
	if err != nil {
		return term{}, err
	}
	if tail.kind != kindList || len(tail.elems) > 0 || tail.tail != nil {
		t.tail = &tail
	}
	return t, nil
}

package transport

// utf8Validator checks UTF-8 across chunk boundaries: a code point may be split
// between two reads or two fragments of one message. It follows the well-formed
// byte sequences of the Unicode standard (table 3-7), so overlong forms,
// surrogates and code points above U+10FFFF are refused at the first bad byte.
type utf8Validator struct {
	need   uint8 // continuation bytes still expected
	lo, hi uint8 // allowed range of the next continuation byte
}

// write validates p as the continuation of what came before. It returns false
// at the first byte that cannot be part of valid UTF-8.
func (v *utf8Validator) write(p []byte) bool {
	for i := 0; i < len(p); {
		if v.need == 0 {
			for i < len(p) && p[i] < 0x80 {
				i++
			}
			if i == len(p) {
				return true
			}
			switch b := p[i]; {
			case b >= 0xC2 && b <= 0xDF:
				v.need, v.lo, v.hi = 1, 0x80, 0xBF
			case b == 0xE0:
				v.need, v.lo, v.hi = 2, 0xA0, 0xBF
			case b >= 0xE1 && b <= 0xEC, b == 0xEE, b == 0xEF:
				v.need, v.lo, v.hi = 2, 0x80, 0xBF
			case b == 0xED:
				v.need, v.lo, v.hi = 2, 0x80, 0x9F
			case b == 0xF0:
				v.need, v.lo, v.hi = 3, 0x90, 0xBF
			case b >= 0xF1 && b <= 0xF3:
				v.need, v.lo, v.hi = 3, 0x80, 0xBF
			case b == 0xF4:
				v.need, v.lo, v.hi = 3, 0x80, 0x8F
			default:
				return false
			}
			i++
			continue
		}
		if b := p[i]; b < v.lo || b > v.hi {
			return false
		}
		v.need--
		v.lo, v.hi = 0x80, 0xBF
		i++
	}
	return true
}

// complete reports whether the input so far ends on a code point boundary.
func (v *utf8Validator) complete() bool { return v.need == 0 }

func (v *utf8Validator) reset() { *v = utf8Validator{} }

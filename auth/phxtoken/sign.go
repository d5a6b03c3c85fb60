package phxtoken

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"time"
)

// Sign makes the token Phoenix.Token.sign(secret_key_base, salt, userID)
// makes at signedAt: the term {<<userID>>, signed_ms, 86400} MAC'd with
// the verifier's key. For tests, benchmarks and tools that stand in for
// the Elixir service; the server only verifies.
func (v *Verifier) Sign(userID string, signedAt time.Time) string {
	term := []byte{etfVersion, tagSmallTuple, 3, tagBinary}
	term = binary.BigEndian.AppendUint32(term, uint32(len(userID)))
	term = append(term, userID...)
	var le []byte
	for ms := uint64(signedAt.UnixMilli()); ms > 0; ms >>= 8 {
		le = append(le, byte(ms))
	}
	term = append(append(term, tagSmallBig, byte(len(le)), 0), le...)
	term = binary.BigEndian.AppendUint32(append(term, tagInt), uint32(DefaultMaxAge/time.Second))
	signed := prefix + base64.RawURLEncoding.EncodeToString(term)
	mac := hmac.New(sha256.New, v.key)
	mac.Write([]byte(signed))
	return signed + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

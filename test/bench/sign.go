package main

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/notify-dev/notify/auth"
)

// signedTokens are the users of a connect command and a token for each.
type signedTokens struct {
	users, tokens []string
}

// sign makes a token of kind c.Token for each user of c (c.Users, or
// user-<First> to user-<First+Count-1>), valid for a day.
func sign(c command) (signedTokens, error) {
	st := signedTokens{users: c.Users}
	if st.users == nil {
		for i := 0; i < c.Count; i++ {
			st.users = append(st.users, "user-"+strconv.Itoa(c.First+i))
		}
	}
	now := time.Now()
	var one func(user string) (string, error)
	switch c.Token {
	case "":
		acfg := auth.Config{Secret: c.Secret}
		one = func(user string) (string, error) { return auth.Sign(acfg, user, c.Topics, 24*time.Hour, now) }
	case "rs256":
		k, err := x509.ParsePKCS8PrivateKey(c.Key)
		if err != nil {
			return st, err
		}
		key, ok := k.(*rsa.PrivateKey)
		if !ok {
			return st, errors.New("rs256: not an RSA key")
		}
		one = func(user string) (string, error) { return signRS256(key, c.Kid, user, c.Topics, now) }
	case "phoenix":
		key, err := phoenixKey(c.KeyBase)
		if err != nil {
			return st, err
		}
		one = func(user string) (string, error) { return phoenixToken(key, user, now), nil }
	default:
		return st, fmt.Errorf("unknown token kind %q", c.Token)
	}
	st.tokens = make([]string, len(st.users))
	for i, u := range st.users {
		tok, err := one(u)
		if err != nil {
			return st, err
		}
		st.tokens[i] = tok
	}
	return st, nil
}

// signRS256 makes an RS256 JWT with the claims auth.Sign writes (user_id,
// iat, exp a day later, topics when any) and kid in its header.
func signRS256(key *rsa.PrivateKey, kid, user string, topics []string, now time.Time) (string, error) {
	claims := jwt.MapClaims{auth.DefaultUserClaim: user, "iat": now.Unix(), "exp": now.Add(24 * time.Hour).Unix()}
	if len(topics) > 0 {
		claims["topics"] = topics
	}
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	t.Header["kid"] = kid
	return t.SignedString(key)
}

// phoenixKey is the key Phoenix.Token derives from a secret_key_base for
// the salt "pubsub" (Plug.Crypto.KeyGenerator's defaults).
func phoenixKey(keyBase string) ([]byte, error) {
	return pbkdf2.Key(sha256.New, keyBase, []byte("pubsub"), 1000, 32)
}

// phoenixToken signs user as Phoenix.Token.sign(key_base, "pubsub", user)
// does, signed at signed: the term {<<user>>, signed_ms, 86400} in the
// Erlang external term format, MAC'd with HMAC-SHA256 (the logic of
// phoenixToken in node/phxtoken_test.go; auth/phxtoken pins the format
// against Erlang).
func phoenixToken(key []byte, user string, signed time.Time) string {
	term := []byte{131, 104, 3, 109}
	term = binary.BigEndian.AppendUint32(term, uint32(len(user)))
	term = append(term, user...)
	ms := uint64(signed.UnixMilli())
	var le []byte
	for ; ms > 0; ms >>= 8 {
		le = append(le, byte(ms))
	}
	term = append(append(term, 110, byte(len(le)), 0), le...)
	term = binary.BigEndian.AppendUint32(append(term, 98), 86400)
	signedText := "SFMyNTY." + base64.RawURLEncoding.EncodeToString(term)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(signedText))
	return signedText + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

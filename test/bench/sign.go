package main

import (
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/notify-dev/notify/auth"
	"github.com/notify-dev/notify/auth/phxtoken"
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
		v, err := phxtoken.New(phxtoken.Config{SecretKeyBase: c.KeyBase})
		if err != nil {
			return st, err
		}
		one = func(user string) (string, error) { return v.Sign(user, now), nil }
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

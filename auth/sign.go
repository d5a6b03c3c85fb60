package auth

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Sign makes an HS256 token for `notify token` holding the user claim, iat,
// exp (now+ttl, omitted when ttl <= 0), topics (when any) and aud/iss (when
// configured), so that a Verifier built from the same cfg accepts it.
func Sign(cfg Config, userID string, topics []string, ttl time.Duration, now time.Time) (string, error) {
	if cfg.Secret == "" {
		return "", errors.New("sign token: NOTIFY_JWT_SECRET is not set")
	}
	// Refuse what Verify would refuse rather than print a useless token.
	if strings.TrimSpace(userID) == "" {
		return "", errors.New("sign token: user id must not be empty")
	}
	if len(userID) > maxUserIDLen {
		return "", fmt.Errorf("sign token: user id longer than %d bytes", maxUserIDLen)
	}

	claims := jwt.MapClaims{
		cfg.userClaim(): userID,
		"iat":           now.Unix(),
	}
	if ttl > 0 {
		claims["exp"] = now.Add(ttl).Unix()
	}
	// Verify drops empty names, so do not write them.
	var list []string
	for _, t := range topics {
		if t != "" {
			list = append(list, t)
		}
	}
	if len(list) > 0 {
		claims[topicsClaim] = list
	}
	if cfg.Audience != "" {
		claims["aud"] = cfg.Audience
	}
	if cfg.Issuer != "" {
		claims["iss"] = cfg.Issuer
	}

	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(cfg.Secret))
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return tok, nil
}

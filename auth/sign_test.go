package auth

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSignRoundTrip(t *testing.T) {
	now := testNow.Add(300 * time.Millisecond) // exp keeps whole seconds
	tests := []struct {
		name   string
		cfg    Config
		userID string
		topics []string
		ttl    time.Duration
		want   Claims
	}{
		{
			name:   "with ttl and topics",
			cfg:    Config{Secret: testSecret, UserClaim: "user_id"},
			userID: "alice",
			topics: []string{"news", "chat"},
			ttl:    24 * time.Hour,
			want:   Claims{UserID: "alice", Topics: []string{"news", "chat"}, ExpiresAt: testNow.Add(24 * time.Hour)},
		},
		{
			name:   "no ttl, no topics",
			cfg:    Config{Secret: testSecret, UserClaim: "user_id"},
			userID: "42",
			want:   Claims{UserID: "42"},
		},
		{
			name:   "empty topic names dropped",
			cfg:    Config{Secret: testSecret},
			userID: "alice",
			topics: []string{"", "news"},
			ttl:    time.Minute,
			want:   Claims{UserID: "alice", Topics: []string{"news"}, ExpiresAt: testNow.Add(time.Minute)},
		},
		{
			name:   "custom claim, audience and issuer",
			cfg:    Config{Secret: testSecret, UserClaim: "sub", Audience: "notify", Issuer: "https://issuer.example"},
			userID: "bob",
			ttl:    time.Hour,
			want:   Claims{UserID: "bob", ExpiresAt: testNow.Add(time.Hour)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := Sign(tt.cfg, tt.userID, tt.topics, tt.ttl, now)
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			got, err := newTestVerifier(t, tt.cfg).Verify(tok)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			assertClaims(t, got, tt.want)
		})
	}
}

func TestSignExpiry(t *testing.T) {
	cfg := Config{Secret: testSecret}
	tok, err := Sign(cfg, "alice", nil, time.Minute, testNow)
	if err != nil {
		t.Fatal(err)
	}
	v := newTestVerifier(t, cfg)
	v.now = func() time.Time { return testNow.Add(time.Minute) }
	if _, err := v.Verify(tok); !errors.Is(err, ErrExpired) {
		t.Fatalf("Verify after ttl = %v, want ErrExpired", err)
	}
}

func TestSignErrors(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		userID  string
		wantErr string
	}{
		{"no secret", Config{}, "alice", "NOTIFY_JWT_SECRET is not set"},
		{"empty user", Config{Secret: testSecret}, "", "user id must not be empty"},
		{"blank user", Config{Secret: testSecret}, "  ", "user id must not be empty"},
		{"user too long", Config{Secret: testSecret}, strings.Repeat("x", maxUserIDLen+1), "longer than 512 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := Sign(tt.cfg, tt.userID, nil, time.Hour, testNow)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Sign = %q, %v; want error containing %q", tok, err, tt.wantErr)
			}
		})
	}
}

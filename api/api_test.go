package api

import (
	"errors"
	"fmt"
	"testing"

	"github.com/twitchtv/twirp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/notify-dev/notify/broker"
)

func TestElixirTopic(t *testing.T) {
	tests := []struct {
		topic string
		group bool
		name  string
		ok    bool
	}{
		{"user:42", false, "42", true},
		{"group:lobby", true, "lobby", true},
		{"group:a:b", true, "a:b", true},
		{"user:", false, "", false},
		{"group:  ", true, "  ", false},
		// Any other name is a topic, as the Elixir service broadcast to it.
		{"room:1", true, "room:1", true},
		{"42", true, "42", true},
		{"User:42", true, "User:42", true},
		{" ", true, " ", false},
	}
	for _, tt := range tests {
		group, name, err := elixirTopic(tt.topic)
		if (err == nil) != tt.ok || (tt.ok && (group != tt.group || name != tt.name)) {
			t.Errorf("%q: %v %q %v, want %v %q ok=%v", tt.topic, group, name, err, tt.group, tt.name, tt.ok)
		}
		if err != nil && status.Code(err) != codes.InvalidArgument {
			t.Errorf("%q: gRPC code %v", tt.topic, status.Code(err))
		}
	}
}

func TestCheckName(t *testing.T) {
	long := make([]byte, maxIDLen+1)
	for i := range long {
		long[i] = 'a'
	}
	for _, bad := range []string{"", " ", "\t\n", string(long), "\xff"} {
		if checkName("f", bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	for _, good := range []string{"42", "a b", "ユーザー", "x:y"} {
		if err := checkName("f", good); err != nil {
			t.Errorf("%q refused: %v", good, err)
		}
	}
}

func TestErrorsForBothTransports(t *testing.T) {
	err := errorf(twirp.Malformed, "bad %s", "body")
	var te twirp.Error
	if !errors.As(err, &te) || te.Code() != twirp.Malformed || te.Msg() != "bad body" {
		t.Fatalf("twirp view: %v", err)
	}
	if s, ok := status.FromError(err); !ok || s.Code() != codes.InvalidArgument || s.Message() != "bad body" {
		t.Fatalf("gRPC view: %v", s)
	}
	for code := range twirpToGRPC {
		if !twirp.IsValidErrorCode(code) {
			t.Errorf("%s is not a Twirp code", code)
		}
	}
	if got := fromBackend(t.Context(), "publish", fmt.Errorf("x: %w", broker.ErrUnavailable)); status.Code(got) != codes.Unavailable {
		t.Fatalf("unavailable broker -> %v", got)
	}
	if got := fromBackend(t.Context(), "publish", errors.New("secret internals")); status.Code(got) != codes.Internal || status.Convert(got).Message() != "publish failed" {
		t.Fatalf("internal error leaks: %v", got)
	}
}

func TestCodeLabel(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{nil, "ok"},
		{errorf(twirp.Unauthenticated, "x"), "unauthenticated"},
		{status.Error(codes.InvalidArgument, "x"), "invalid_argument"},
		{status.Error(codes.DeadlineExceeded, "x"), "deadline_exceeded"},
		{errors.New("plain"), "internal"},
	}
	for _, tt := range tests {
		if got := codeLabel(tt.err); got != tt.want {
			t.Errorf("%v: %q, want %q", tt.err, got, tt.want)
		}
	}
}

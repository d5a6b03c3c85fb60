package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/twitchtv/twirp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/notify-dev/notify/broker"
)

// Error is an API error that both servers understand: Twirp sees a
// twirp.Error, gRPC sees a status (GRPCStatus). One implementation of the
// service can then serve both.
type Error struct{ tw twirp.Error }

var _ twirp.Error = Error{}

func (e Error) Code() twirp.ErrorCode                  { return e.tw.Code() }
func (e Error) Msg() string                            { return e.tw.Msg() }
func (e Error) Meta(key string) string                 { return e.tw.Meta(key) }
func (e Error) MetaMap() map[string]string             { return e.tw.MetaMap() }
func (e Error) Error() string                          { return e.tw.Error() }
func (e Error) WithMeta(key, value string) twirp.Error { return Error{e.tw.WithMeta(key, value)} }

// GRPCStatus makes Error a gRPC status error.
func (e Error) GRPCStatus() *status.Status {
	return status.New(grpcCode(e.Code()), e.Msg())
}

func errorf(code twirp.ErrorCode, format string, a ...any) error {
	return Error{twirp.NewError(code, fmt.Sprintf(format, a...))}
}

// fromBackend turns a backend error into an API error without leaking its
// internals: unreachable broker -> unavailable, everything else internal.
func fromBackend(ctx context.Context, op string, err error) error {
	var ae Error
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, broker.ErrUnavailable):
		return errorf(twirp.Unavailable, "%s: the broker is unavailable, retry later", op)
	case errors.Is(err, context.DeadlineExceeded) || ctx.Err() == context.DeadlineExceeded:
		return errorf(twirp.DeadlineExceeded, "%s: deadline exceeded", op)
	case errors.Is(err, context.Canceled):
		return errorf(twirp.Canceled, "%s: canceled", op)
	}
	return errorf(twirp.Internal, "%s failed", op)
}

var twirpToGRPC = map[twirp.ErrorCode]codes.Code{
	twirp.Canceled:           codes.Canceled,
	twirp.Unknown:            codes.Unknown,
	twirp.InvalidArgument:    codes.InvalidArgument,
	twirp.Malformed:          codes.InvalidArgument,
	twirp.DeadlineExceeded:   codes.DeadlineExceeded,
	twirp.NotFound:           codes.NotFound,
	twirp.BadRoute:           codes.Unimplemented,
	twirp.AlreadyExists:      codes.AlreadyExists,
	twirp.PermissionDenied:   codes.PermissionDenied,
	twirp.Unauthenticated:    codes.Unauthenticated,
	twirp.ResourceExhausted:  codes.ResourceExhausted,
	twirp.FailedPrecondition: codes.FailedPrecondition,
	twirp.Aborted:            codes.Aborted,
	twirp.OutOfRange:         codes.OutOfRange,
	twirp.Unimplemented:      codes.Unimplemented,
	twirp.Internal:           codes.Internal,
	twirp.Unavailable:        codes.Unavailable,
	twirp.DataLoss:           codes.DataLoss,
}

func grpcCode(c twirp.ErrorCode) codes.Code {
	if g, ok := twirpToGRPC[c]; ok {
		return g
	}
	return codes.Unknown
}

// codeLabel names the outcome of a call for metrics, the same way for both
// servers: "ok" or the Twirp error code ("invalid_argument", ...).
func codeLabel(err error) string {
	if err == nil {
		return "ok"
	}
	var te twirp.Error
	if errors.As(err, &te) {
		return string(te.Code())
	}
	if s, ok := status.FromError(err); ok {
		return snake(s.Code().String())
	}
	return string(twirp.Internal)
}

// snake turns gRPC's code names (InvalidArgument) into Twirp's (invalid_argument).
func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twitchtv/twirp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/notify-dev/notify/api/notificationspb"
	"github.com/notify-dev/notify/api/notifypb"
)

// Config of the API servers.
type Config struct {
	APIKey string // NOTIFY_API_KEY; empty disables every method but Auth
	// AuthOff (NOTIFY_API_AUTH=off) serves every method without a key, as
	// the older services did behind a private network; Authorization is
	// then ignored.
	AuthOff bool
	// SessionCookie (NOTIFY_SESSION_COOKIE) is read by Twirp's Auth, and
	// wins over the request's authorization, as go-bridget/notify did.
	SessionCookie  string
	MaxPublishSize int // NOTIFY_MAX_PUBLISH_SIZE
	Logger         *slog.Logger
	Registerer     prometheus.Registerer
}

// Server serves the API over Twirp and gRPC.
type Server struct {
	svc     *Service
	keySum  [32]byte
	keySet  bool
	authOff bool
	cookie  string // session cookie name; "" = none
	log     *slog.Logger
	metrics *metrics
	health  *health.Server
}

// publicMethods need no API key.
var publicMethods = map[string]bool{
	"/notify.NotifyService/Auth": true,
}

const errNoKey = "the server API is disabled: set NOTIFY_API_KEY on the server, then send it as \"Authorization: Bearer <key>\""

// NewServer builds the API on b.
func NewServer(b Backend, cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		svc:     NewService(b, cfg.MaxPublishSize),
		keySum:  sha256.Sum256([]byte(cfg.APIKey)),
		keySet:  cfg.APIKey != "",
		authOff: cfg.AuthOff,
		cookie:  cfg.SessionCookie,
		log:     cfg.Logger,
		metrics: newMetrics(cfg.Registerer),
		health:  health.NewServer(),
	}
	return s
}

// checkKey verifies "Bearer <key>" in constant time (over digests, so not
// even the key's length leaks). With AuthOff every call passes.
func (s *Server) checkKey(authorization string) error {
	if s.authOff {
		return nil
	}
	if !s.keySet {
		return errorf(twirp.Unauthenticated, errNoKey)
	}
	tok, ok := cutBearer(authorization)
	if !ok {
		return errorf(twirp.Unauthenticated, "missing API key: send \"Authorization: Bearer <NOTIFY_API_KEY>\"")
	}
	sum := sha256.Sum256([]byte(tok))
	if subtle.ConstantTimeCompare(sum[:], s.keySum[:]) != 1 {
		return errorf(twirp.Unauthenticated, "wrong API key")
	}
	return nil
}

func cutBearer(h string) (string, bool) {
	h = strings.TrimSpace(h)
	if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") {
		return "", false
	}
	tok := strings.TrimSpace(h[7:])
	return tok, tok != ""
}

// ---- Twirp, on the HTTP port ----

// callInfo follows one Twirp call through the hooks.
type callInfo struct {
	authorization string
	method        string
	err           error
}

type callKey struct{}

// TwirpHandler serves /twirp/notify.NotifyService/<Method>; mount it at
// notifypb.NotifyServicePathPrefix.
func (s *Server) TwirpHandler() http.Handler {
	hooks := &twirp.ServerHooks{
		RequestRouted: func(ctx context.Context) (context.Context, error) {
			ci, _ := ctx.Value(callKey{}).(*callInfo)
			m, _ := twirp.MethodName(ctx)
			if ci != nil {
				ci.method = m
			}
			if publicMethods["/notify.NotifyService/"+m] || ci == nil {
				return ctx, nil
			}
			return ctx, s.checkKey(ci.authorization)
		},
		Error: func(ctx context.Context, err twirp.Error) context.Context {
			if ci, _ := ctx.Value(callKey{}).(*callInfo); ci != nil {
				ci.err = err
			}
			return ctx
		},
	}
	th := notifypb.NewNotifyServiceServer(s.svc, twirp.WithServerHooks(hooks))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ci := &callInfo{authorization: r.Header.Get("Authorization")}
		if s.cookie != "" {
			r = r.WithContext(withSessionCookie(r.Context(), r, s.cookie))
		}
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("panic in API call", "method", ci.method, "panic", p)
				ci.err = errorf(twirp.Internal, "internal error")
			}
			s.metrics.observe(ci.method, ci.err, time.Since(start))
		}()
		th.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callKey{}, ci)))
	})
}

// ---- gRPC, on GRPC_PORT ----

// GRPCServer returns a gRPC server with both services, the standard health
// service and reflection. Every unary call but Auth needs the API key.
func (s *Server) GRPCServer() *grpc.Server {
	g := grpc.NewServer(
		grpc.ChainUnaryInterceptor(s.unaryInterceptor),
		grpc.ChainStreamInterceptor(s.streamInterceptor),
	)
	notifypb.RegisterNotifyServiceServer(g, s.svc)
	notificationspb.RegisterNotificationsServiceServer(g, s.svc)
	healthpb.RegisterHealthServer(g, s.health)
	reflection.Register(g)
	s.SetServing(true)
	return g
}

// SetServing sets what the gRPC health service reports.
func (s *Server) SetServing(ok bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	for _, svc := range []string{"", "notify.NotifyService", "notifications.NotificationsService"} {
		s.health.SetServingStatus(svc, st)
	}
}

func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	start := time.Now()
	method := info.FullMethod[strings.LastIndexByte(info.FullMethod, '/')+1:]
	monitored := strings.HasPrefix(info.FullMethod, "/notify.") || strings.HasPrefix(info.FullMethod, "/notifications.")
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("panic in API call", "method", info.FullMethod, "panic", p)
			err = status.Error(codes.Internal, "internal error")
		}
		if monitored {
			s.metrics.observe(method, err, time.Since(start))
		}
	}()
	if monitored && !publicMethods[info.FullMethod] {
		md, _ := metadata.FromIncomingContext(ctx)
		var h string
		if v := md.Get("authorization"); len(v) > 0 {
			h = v[0]
		}
		if err := s.checkKey(h); err != nil {
			return nil, err
		}
	}
	return handler(ctx, req)
}

// Only the health service (Watch) and reflection stream; both are public.
func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if strings.HasPrefix(info.FullMethod, "/grpc.health.") || strings.HasPrefix(info.FullMethod, "/grpc.reflection.") {
		return handler(srv, ss)
	}
	return status.Error(codes.Unimplemented, "no such stream")
}

// ---- metrics ----

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notify_api_requests_total",
			Help: "Server API calls (Twirp and gRPC), by method and result code.",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "notify_api_request_duration_seconds",
			Help:    "Server API call duration, by method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"method"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration)
	}
	for _, meth := range methods {
		m.requests.WithLabelValues(meth, "ok")
		m.duration.WithLabelValues(meth)
	}
	return m
}

// methods are the label values of method; anything else is "unknown", so a
// client cannot grow the label set.
var methods = []string{"Auth", "Publish", "GetState", "SetState", "DeleteState", "Presence", "Disconnect", "BroadcastTextMessage"}

func (m *metrics) observe(method string, err error, d time.Duration) {
	known := false
	for _, k := range methods {
		if k == method {
			known = true
			break
		}
	}
	if !known {
		method = "unknown"
	}
	m.requests.WithLabelValues(method, codeLabel(err)).Inc()
	m.duration.WithLabelValues(method).Observe(d.Seconds())
}

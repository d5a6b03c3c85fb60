// Command notify runs a notify node, and helps operate one.
//
//	notify [serve|start] [flags]
//	                          run a node (every flag is also an environment variable;
//	                          start is the older Notify's name for it)
//	notify token --user ID    print a signed HS256 token for a user
//	notify publish --user ID --payload TEXT
//	                          publish through a node's API
//	notify version            print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notify-dev/notify/auth"
	"github.com/notify-dev/notify/internal/flagext"
	"github.com/notify-dev/notify/node"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve", "start":
		return serve(args, stdout, stderr)
	case "token":
		return token(args, stdout, stderr)
	case "publish":
		return publish(args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "notify", versionString())
		return 0
	case "help":
		return serve([]string{"--help"}, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "notify: unknown command %q (commands: serve or start, token, publish, version)\n", cmd)
		return 2
	}
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "dev-" + s.Value[:12]
			}
		}
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			return bi.Main.Version
		}
	}
	return "dev"
}

// logConfig holds LOG_LEVEL and LOG_FORMAT.
type logConfig struct {
	Level  string
	Format string
}

func (c *logConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Level, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.Format, "log-format", "json", "json, or text for humans")
}

func (c logConfig) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, fmt.Errorf("invalid LOG_LEVEL %q: want debug, info, warn or error", c.Level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(c.Format) {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("invalid LOG_FORMAT %q: want json or text", c.Format)
}

func serve(args []string, stdout, stderr io.Writer) int {
	var cfg node.Config
	var lc logConfig
	fs := flag.NewFlagSet("notify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.RegisterFlags(fs)
	lc.RegisterFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: notify [serve|start] [flags]\n       notify token --user ID [--ttl 24h] [--topics a,b]\n"+
			"       notify publish --user ID|--topic NAME --payload TEXT [--addr URL] [--api-key K]\n       notify version\n\n"+
			"Settings (flag, environment variable, default); flags win over the environment:\n")
		printSettings(stderr, fs)
	}
	legacy := readLegacy(os.Environ(), lookupEnv)
	if err := parseSettings(fs, args, legacy.lookup(lookupEnv)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "notify:", err)
		return 2
	}
	log, err := lc.logger(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "notify:", err)
		return 2
	}
	legacy.report(log)
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "notify: configuration:\n "+strings.ReplaceAll(err.Error(), "\n", "\n "))
		return 2
	}
	raiseFileLimit(log)
	redis.SetLogger(redisLog{log})
	n, err := node.New(cfg, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := n.Run(ctx); err != nil {
		log.Error("stopped with error", "err", err)
		return 1
	}
	return 0
}

// redisLog sends go-redis's own messages (every failed dial, for one) to
// debug: the broker reports outages once, at warn.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis")
}

func token(args []string, stdout, stderr io.Writer) int {
	var ac auth.Config
	var user string
	var ttl time.Duration
	var topics flagext.StringSlice
	fs := flag.NewFlagSet("notify token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ac.RegisterFlags(fs)
	fs.StringVar(&user, "user", "", "user id the token is for (required)")
	fs.DurationVar(&ttl, "ttl", 24*time.Hour, "lifetime; 0 = no expiry")
	fs.Var(&topics, "topics", "comma-separated topics the token may join")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: notify token --user ID [--ttl 24h] [--topics a,b]\n\nSigns with NOTIFY_JWT_SECRET (HS256).\n\n")
		printSettings(stderr, fs)
	}
	if err := parseSettings(fs, args, lookupEnv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "notify token:", err)
		return 2
	}
	if user == "" {
		fmt.Fprintln(stderr, "notify token: --user is required")
		return 2
	}
	tok, err := auth.Sign(ac, user, topics, ttl, time.Now())
	if err != nil {
		fmt.Fprintln(stderr, "notify token:", err)
		return 1
	}
	fmt.Fprintln(stdout, tok)
	return 0
}

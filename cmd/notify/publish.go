package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/twitchtv/twirp"

	"github.com/notify-dev/notify/api/notifypb"
	"github.com/notify-dev/notify/internal/flagext"
)

// publish calls the server API's Publish, so operators need no curl.
func publish(args []string, stdout, stderr io.Writer) int {
	var users, topics flagext.StringSlice
	var payload, addr, key string
	var timeout time.Duration
	fs := flag.NewFlagSet("notify publish", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Var(&users, "user", "user id(s) to publish to, comma-separated")
	fs.Var(&topics, "topic", "topic(s) to publish to, comma-separated")
	fs.StringVar(&payload, "payload", "", "the message, sent verbatim")
	fs.StringVar(&addr, "addr", "http://localhost:3000", "base URL of a notify node")
	fs.StringVar(&key, "api-key", "", "server API key (default: NOTIFY_API_KEY)")
	fs.DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait for the node")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: notify publish --user ID|--topic NAME --payload TEXT [--addr URL] [--api-key K]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if key == "" {
		key, _ = lookupEnv("NOTIFY_API_KEY")
	}
	if len(users)+len(topics) == 0 {
		fmt.Fprintln(stderr, "notify publish: give --user or --topic")
		return 2
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	client := notifypb.NewNotifyServiceProtobufClient(strings.TrimRight(addr, "/"), &http.Client{Timeout: timeout})
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ctx, err := twirp.WithHTTPRequestHeaders(ctx, http.Header{"Authorization": {"Bearer " + key}})
	if err != nil {
		fmt.Fprintln(stderr, "notify publish:", err)
		return 1
	}
	resp, err := client.Publish(ctx, &notifypb.PublishRequest{UserIds: users, Topics: topics, Payload: []byte(payload)})
	if err != nil {
		var te twirp.Error
		if errors.As(err, &te) {
			fmt.Fprintf(stderr, "notify publish: %s: %s\n", te.Code(), te.Msg())
		} else {
			fmt.Fprintln(stderr, "notify publish:", err)
		}
		return 1
	}
	if resp.Connections != nil {
		fmt.Fprintf(stdout, "published to %d target(s); %d connection(s) of the users took it\n", resp.GetTargets(), resp.GetConnections())
	} else {
		fmt.Fprintf(stdout, "published to %d target(s)\n", resp.GetTargets())
	}
	// With history on: one cursor per target, users then topics.
	targets := append(append([]string(nil), users...), topics...)
	for i, c := range resp.GetCursors() {
		if i < len(targets) {
			fmt.Fprintf(stdout, "%s %s\n", targets[i], c)
		}
	}
	return 0
}

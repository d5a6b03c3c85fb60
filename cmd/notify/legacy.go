package main

import (
	"log/slog"
	"net"
	"sort"
	"strings"
)

// legacySettings are the environment variables of the older services a
// migrated deployment may still set. Those with a meaning here are mapped to
// our setting when that setting is not set itself; the others are named as
// ignored, so nobody believes they still do something.
type legacySettings struct {
	// mapped: our variable -> value derived from the older ones.
	mapped map[string]string
	// from: our variable -> the older variables it was derived from.
	from map[string]string
	// ignored: older variables that mean nothing here, sorted.
	ignored []string
}

// ignoredLegacy are the Elixir service's settings with no meaning here
// (prefixes end with _).
var ignoredLegacy = []string{"ELASTIC_APM_", "ENVIRONMENT", "PHX_HOST"}

// gossipPort is NOTIFY_GOSSIP_ADDR's default port: what a DNS_CLUSTER_QUERY
// name is joined on.
const gossipPort = "7946"

// readLegacy looks at environ (KEY=VALUE) through lookup for settings of
// the older services.
func readLegacy(environ []string, lookup func(string) (string, bool)) legacySettings {
	l := legacySettings{mapped: map[string]string{}, from: map[string]string{}}
	set := func(name string) bool { v, ok := lookup(name); return ok && strings.TrimSpace(v) != "" }
	if host, ok := lookup("REDIS_HOST"); ok && strings.TrimSpace(host) != "" {
		port, from := "6379", "REDIS_HOST"
		if p, ok := lookup("REDIS_PORT"); ok && strings.TrimSpace(p) != "" {
			port, from = strings.TrimSpace(p), "REDIS_HOST, REDIS_PORT"
		}
		if !set("PUBSUB_REDIS_ADDR") && !set("REDIS_URL") && !set("REDIS_SENTINEL_ADDRS") && !set("REDIS_CLUSTER_ADDRS") {
			l.mapped["PUBSUB_REDIS_ADDR"] = net.JoinHostPort(strings.TrimSpace(host), port)
			l.from["PUBSUB_REDIS_ADDR"] = from
		}
	} else if set("REDIS_PORT") {
		l.ignored = append(l.ignored, "REDIS_PORT")
	}
	if q, ok := lookup("DNS_CLUSTER_QUERY"); ok && strings.TrimSpace(q) != "" && !set("NOTIFY_JOIN") {
		l.mapped["NOTIFY_JOIN"] = "dns+" + net.JoinHostPort(strings.TrimSpace(q), gossipPort)
		l.from["NOTIFY_JOIN"] = "DNS_CLUSTER_QUERY"
	}
	if set("SECRET_KEY_BASE") && !set("NOTIFY_PHOENIX_SECRET_KEY_BASE") {
		v, _ := lookup("SECRET_KEY_BASE")
		l.mapped["NOTIFY_PHOENIX_SECRET_KEY_BASE"] = v
		l.from["NOTIFY_PHOENIX_SECRET_KEY_BASE"] = "SECRET_KEY_BASE"
	}
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		for _, ig := range ignoredLegacy {
			if name == ig || (strings.HasSuffix(ig, "_") && strings.HasPrefix(name, ig)) {
				l.ignored = append(l.ignored, name)
			}
		}
	}
	sort.Strings(l.ignored)
	return l
}

// lookup returns our variable's value, the mapped one when only the older
// service's was set.
func (l legacySettings) lookup(next func(string) (string, bool)) func(string) (string, bool) {
	return func(k string) (string, bool) {
		if v, ok := next(k); ok {
			return v, true
		}
		v, ok := l.mapped[k]
		return v, ok
	}
}

// report says at start which older settings were mapped and which are
// ignored. Values are not logged: one of them is a secret.
func (l legacySettings) report(log *slog.Logger) {
	names := make([]string, 0, len(l.mapped))
	for k := range l.mapped {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		log.Info("legacy setting mapped", "from", l.from[k], "to", k)
	}
	if len(l.ignored) > 0 {
		log.Warn("legacy settings ignored: they have no meaning in notify", "settings", strings.Join(l.ignored, ","))
	}
}

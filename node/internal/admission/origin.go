package admission

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
)

// originPattern is one entry of the Origin allowlist: scheme and host, where
// the host may start with "*." to allow every subdomain.
type originPattern struct {
	scheme, host string // host lower-cased, with port if given
	wildcard     bool   // host is a suffix: "*.example.com" -> ".example.com"
}

// ParseOrigin checks one entry of NOTIFY_ALLOWED_ORIGINS.
func ParseOrigin(s string) error {
	_, err := parseOriginPattern(s)
	return err
}

func parseOriginPattern(s string) (originPattern, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return originPattern{}, errors.New("want scheme://host[:port], e.g. https://app.example.com or https://*.example.com")
	}
	p := originPattern{scheme: strings.ToLower(u.Scheme), host: strings.ToLower(u.Host)}
	if rest, ok := strings.CutPrefix(p.host, "*."); ok {
		p.wildcard, p.host = true, "."+rest
	}
	return p, nil
}

func (p originPattern) match(scheme, host string) bool {
	if scheme != p.scheme {
		return false
	}
	if p.wildcard {
		return strings.HasSuffix(host, p.host) && len(host) > len(p.host)
	}
	return host == p.host
}

// OriginAllowed: browsers send Origin; with an allowlist set it must match.
// Clients that send none (servers, mobile apps) are not browsers and pass.
func (p *Pipeline) OriginAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if len(p.origins) == 0 || origin == "" {
		return true
	}
	o, err := parseOriginPattern(origin)
	if err != nil || o.wildcard {
		return false
	}
	for _, allowed := range p.origins {
		if allowed.match(o.scheme, o.host) {
			return true
		}
	}
	return false
}

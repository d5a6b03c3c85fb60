package admission

import (
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/notify-dev/notify/auth"
	"github.com/notify-dev/notify/internal/flagext"
	"github.com/notify-dev/notify/node/internal/respond"
)

// Limits on what one connection may ask for.
const (
	MaxTopicsPerConn = 64
	MaxTopicLen      = 256
)

type forbiddenError string

func (e forbiddenError) Error() string { return string(e) }

// AllowsTopic reports whether claims may join topic: the token's topics
// claim lists it, or NOTIFY_OPEN_TOPICS is on.
func (p *Pipeline) AllowsTopic(claims auth.Claims, topic string) bool {
	return p.cfg.OpenTopics || claims.Allows(topic)
}

// topics parses the topic query parameters (names separated by commas or
// spaces, the parameter may repeat) and checks each against the token.
func (p *Pipeline) topics(r *http.Request, claims auth.Claims) ([]string, error) {
	var topics []string
	for _, v := range Query(r)["topic"] {
		for _, t := range flagext.SplitList(v) {
			if slices.Contains(topics, t) {
				continue
			}
			if len(t) > MaxTopicLen {
				return nil, errors.New("topic name longer than 256 bytes")
			}
			if !p.AllowsTopic(claims, t) {
				return nil, forbiddenError("topic " + respond.Quote(t) + " not allowed by the token")
			}
			// A copy: t is part of the request line, which would otherwise
			// stay alive as long as the connection.
			topics = append(topics, strings.Clone(t))
		}
	}
	if len(topics) > MaxTopicsPerConn {
		return nil, errors.New("more than 64 topics")
	}
	return topics, nil
}

package admission

import (
	"fmt"
	"net/http"

	"github.com/notify-dev/notify/node/internal/hub"
)

// RejectUserLimit: the user already has NOTIFY_MAX_CONNECTIONS_PER_USER
// connections.
const RejectUserLimit = "user_limit"

// AddClient registers c in the hub (joined to its user, or not yet: a
// Phoenix socket) unless its user already has MaxConnectionsPerUser
// connections. All of a user's connections live on its owner (the others
// relay them there), so the owner's count is the cluster's, and the check
// and the registration are one step: the limit holds exactly. A refused
// client is answered 429, in the protocol's format when refuse is given.
func (p *Pipeline) AddClient(w http.ResponseWriter, c *hub.Client, inUser bool, refuse func(w http.ResponseWriter, status int, msg string)) bool {
	max := p.cfg.MaxConnectionsPerUser
	if p.cfg.Hub.AddLimit(c, inUser, max) {
		return true
	}
	msg := fmt.Sprintf("this user already has %d connections, the most NOTIFY_MAX_CONNECTIONS_PER_USER allows", max)
	if refuse == nil {
		p.Refuse(w, http.StatusTooManyRequests, RejectUserLimit, msg)
		return false
	}
	p.Count(RejectUserLimit)
	refuse(w, http.StatusTooManyRequests, msg)
	return false
}

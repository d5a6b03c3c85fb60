package peers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/notify-dev/notify/broker"
	"github.com/notify-dev/notify/cluster"
	"github.com/notify-dev/notify/node/internal/respond"
)

// PresencePath is where a member answers presence calls of its peers.
const PresencePath = "/cluster/presence"

const (
	maxPresenceUsers = 1000
	maxPresenceBody  = 1 << 20
	presenceTimeout  = 2 * time.Second
)

type presenceRequest struct {
	UserIDs []string `json:"user_ids"`
}

type presenceResponse struct {
	Connections map[string]uint32 `json:"connections"`
}

// Presence counts the connections of users. All of a user's connections
// live on its owner, so the owner alone is asked: one call per owning
// member, none for the users this node owns. This node's own count is
// added too (a client served here while its owner was unreachable). A
// member that does not answer fails the call: a partial count would pass
// for a true one.
func (p *Peers) Presence(ctx context.Context, users []string) (map[string]uint32, error) {
	out := p.local(users)
	byOwner := map[string][]string{}
	for _, u := range users {
		if owner, _ := p.cfg.Directory.Owner(u); owner != "" {
			byOwner[owner] = append(byOwner[owner], u)
		}
	}
	if len(byOwner) == 0 {
		return out, nil
	}
	members := map[string]cluster.Member{}
	for _, m := range p.cfg.Directory.Peers() {
		members[m.Name] = m
	}
	type result struct {
		counts map[string]uint32
		err    error
	}
	results := make(chan result, len(byOwner))
	for owner, us := range byOwner {
		m, ok := members[owner]
		if !ok {
			results <- result{err: fmt.Errorf("%s: owner not reachable", owner)}
			continue
		}
		body, _ := json.Marshal(presenceRequest{UserIDs: us})
		go func() {
			c, err := p.ask(ctx, m, body)
			results <- result{c, err}
		}()
	}
	var errs []error
	for range byOwner {
		r := <-results
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		for u, c := range r.counts {
			if _, asked := out[u]; asked {
				out[u] += c
			}
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("presence: %w: %w", broker.ErrUnavailable, errors.Join(errs...))
	}
	return out, nil
}

func (p *Peers) local(users []string) map[string]uint32 {
	out := make(map[string]uint32, len(users))
	for _, u := range users {
		out[u] = uint32(p.cfg.Hub.UserCount(u))
	}
	return out
}

func (p *Peers) ask(ctx context.Context, m cluster.Member, body []byte) (map[string]uint32, error) {
	ctx, cancel := context.WithTimeout(ctx, presenceTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+m.PeerAddr()+PresencePath, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.Name, err)
	}
	req.Header.Set("Content-Type", "application/json")
	p.cfg.Auth.Sign(req, body)
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("%s answered %d: %s", m.Name, resp.StatusCode, bytes.TrimSpace(msg))
	}
	var pr presenceResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxPresenceBody)).Decode(&pr); err != nil {
		return nil, fmt.Errorf("%s: %w", m.Name, err)
	}
	return pr.Connections, nil
}

// ServePresence is POST /cluster/presence: this node's connection counts,
// for a peer summing them. The request must be signed with the cluster
// secret. It is served on the internal listener (INTERNAL_PORT, else PORT):
// peers call the address the member advertises (cluster.Member.PeerAddr).
func (p *Peers) ServePresence(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPresenceBody))
	if err != nil {
		respond.Error(w, http.StatusRequestEntityTooLarge, "body too large")
		return
	}
	if err := p.cfg.Auth.Verify(r, body); err != nil {
		p.log.Warn("presence call refused", "remote", r.RemoteAddr, "err", err)
		respond.Error(w, http.StatusUnauthorized, err.Error())
		return
	}
	var req presenceRequest
	if err := json.Unmarshal(body, &req); err != nil || len(req.UserIDs) > maxPresenceUsers {
		respond.Error(w, http.StatusBadRequest, "want {\"user_ids\": [...]} with at most 1000 ids")
		return
	}
	respond.JSON(w, http.StatusOK, presenceResponse{Connections: p.local(req.UserIDs)})
}

package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/notify-dev/notify/api"
	"github.com/notify-dev/notify/auth"
	"github.com/notify-dev/notify/broker"
	"github.com/notify-dev/notify/cluster"
	"github.com/notify-dev/notify/transport"
)

// apiBackend is the node as the server API sees it.
type apiBackend struct {
	broker.StateStore
	n *Node
}

var _ api.Backend = apiBackend{}

func (b apiBackend) Verify(token string) (auth.Claims, error) { return b.n.verifier.Verify(token) }

func (b apiBackend) Publish(ctx context.Context, channels []string, payload []byte) error {
	return b.n.broker.PublishMany(ctx, channels, payload)
}

// Presence sums the connection counts of every member: a user's
// connections are normally on its owner, but during a membership change or
// after an owner was unreachable some live elsewhere.
func (b apiBackend) Presence(ctx context.Context, users []string) (map[string]uint32, error) {
	out := b.n.localPresence(users)
	var peers []cluster.Member
	for _, m := range b.n.view().members {
		if !m.Local && m.RelayAddr != "" {
			peers = append(peers, m)
		}
	}
	if len(peers) == 0 {
		return out, nil
	}
	body, _ := json.Marshal(presenceRequest{UserIDs: users})
	type result struct {
		counts map[string]uint32
		err    error
	}
	results := make(chan result, len(peers))
	for _, m := range peers {
		go func() {
			c, err := b.peerPresence(ctx, m, body)
			results <- result{c, err}
		}()
	}
	var errs []error
	for range peers {
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
		// A partial count would pass for a true one: refuse instead.
		return nil, fmt.Errorf("presence: %w: %w", broker.ErrUnavailable, errors.Join(errs...))
	}
	return out, nil
}

func (b apiBackend) peerPresence(ctx context.Context, m cluster.Member, body []byte) (map[string]uint32, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+m.RelayAddr+"/cluster/presence", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+b.n.cfg.APIKey)
	resp, err := b.n.peerClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %d", m.Name, resp.StatusCode)
	}
	var pr presenceResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&pr); err != nil {
		return nil, fmt.Errorf("%s: %w", m.Name, err)
	}
	return pr.Connections, nil
}

// PublishEvent sends message to users and topics with a Phoenix event name,
// as one control message (see opEvent).
func (b apiBackend) PublishEvent(ctx context.Context, users, topics []string, event, message string) error {
	msg, _ := json.Marshal(control{Op: opEvent, Users: users, Topics: topics, Event: event, Message: message})
	if err := b.n.broker.Publish(ctx, broker.ControlChannel, msg); err != nil {
		return fmt.Errorf("publish event: %w", err)
	}
	return nil
}

// Disconnect goes to every node as a control message; each closes its own
// connections of the user.
func (b apiBackend) Disconnect(ctx context.Context, user string) error {
	msg, _ := json.Marshal(control{Op: opDisconnect, User: user})
	if err := b.n.broker.Publish(ctx, broker.ControlChannel, msg); err != nil {
		return fmt.Errorf("disconnect: %w", err)
	}
	return nil
}

// control is a command on broker.ControlChannel, to every node. JSON: rare
// and small, and readable with redis-cli MONITOR.
type control struct {
	Op      string   `json:"op"`
	User    string   `json:"user,omitempty"`
	Node    string   `json:"node,omitempty"`
	Users   []string `json:"users,omitempty"`
	Topics  []string `json:"topics,omitempty"`
	Event   string   `json:"event,omitempty"`
	Message string   `json:"message,omitempty"`
}

const (
	opDisconnect = "disconnect"
	opDrainVia   = "drain-via" // a draining node asks owners to close what it relays
	// opEvent carries a message with a Phoenix event name
	// (BroadcastTextMessage). Why here and not on notify:<id>: that channel
	// carries bytes verbatim, for /notify/ws clients and for applications
	// that publish with redis-cli, so an envelope there would break both;
	// and a channel of its own would be one more subscription per node. The
	// control channel reaches every node in the same ordered stream as the
	// rest, and one envelope serves every target of the call.
	opEvent = "event"
)

// onControl runs a control message from the broker.
func (n *Node) onControl(payload string) {
	var c control
	if err := json.Unmarshal([]byte(payload), &c); err != nil {
		n.log.Warn("malformed control message ignored", "err", err)
		return
	}
	switch c.Op {
	case opDisconnect:
		closed := 0
		for _, cl := range n.hub.userConns(c.User) {
			n.closeClient(cl, transport.CloseDisconnected, "disconnected")
			closed++
		}
		if closed > 0 {
			n.log.Info("user disconnected by the API", "user", c.User, "connections", closed)
		}
	case opEvent:
		for _, u := range c.Users {
			n.deliverEvent(false, u, c.Message, c.Event)
		}
		for _, t := range c.Topics {
			n.deliverEvent(true, t, c.Message, c.Event)
		}
	case opDrainVia:
		if c.Node != n.cfg.NodeName {
			n.closeRelayedVia(c.Node)
		}
	default:
		// A newer node's command: ignore it rather than fail.
		n.log.Debug("unknown control message ignored", "op", c.Op)
	}
}

// deliverEvent delivers an evented message: /notify/ws and SSE clients get
// the message verbatim, Phoenix clients get it with its event name.
func (n *Node) deliverEvent(topic bool, name, message, event string) {
	if name == "" {
		n.metrics.droppedEmpty.Inc()
		return
	}
	n.metrics.received.Inc()
	if event == "" {
		event = "message"
	}
	if d := n.hub.deliver(topic, name, message, event); d > 0 {
		n.metrics.delivered.Add(float64(d))
	}
}

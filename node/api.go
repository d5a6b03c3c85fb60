package node

import (
	"context"

	"github.com/notify-dev/notify/api"
	"github.com/notify-dev/notify/auth"
	"github.com/notify-dev/notify/broker"
)

// apiBackend is the node as the server API sees it: the state store, the
// broker for publishes, peers for what involves every node.
type apiBackend struct{ n *Node }

var _ api.Backend = apiBackend{}

func (b apiBackend) Verify(token string) (auth.Claims, error) { return b.n.accept.Verify(token) }

// Publish appends to the targets' history and publishes (history on), or
// publishes only (a plain PUBLISH per target, history off); then, where
// ownership tells who serves each user, counts the users' connections.
func (b apiBackend) Publish(ctx context.Context, targets []broker.Target, payload []byte) (api.Published, error) {
	var p api.Published
	var err error
	if b.n.history != nil {
		p.Cursors, err = b.n.history.Append(ctx, targets, payload, "")
	} else {
		channels := make([]string, len(targets))
		for i, t := range targets {
			channels[i] = t.Channel()
		}
		err = b.n.broker.PublishMany(ctx, channels, payload)
	}
	if err != nil {
		return api.Published{}, err
	}
	p.Connections, p.Counted = b.connections(ctx, targets)
	return p, nil
}

// connections counts the connections of the user targets, asking each
// user's owner (Presence: one call per owner), when the node can know that
// the owner is where the message went: every connection of a user is
// served by its owner, and in these modes a message reaches the nodes that
// serve its channel only. false when it cannot know, or an owner did not
// answer (the publish itself succeeded; it is not failed for a count).
func (b apiBackend) connections(ctx context.Context, targets []broker.Target) (int, bool) {
	if b.n.perChannel() == nil && b.n.cfg.brokerKind() != brokerCluster {
		return 0, false
	}
	var users []string
	for _, t := range targets {
		if !t.Topic {
			users = append(users, t.Name)
		}
	}
	if len(users) == 0 {
		return 0, false
	}
	counts, err := b.n.peers.Presence(ctx, users)
	if err != nil {
		b.n.log.Debug("publish: the connections were not counted", "err", err)
		return 0, false
	}
	n := 0
	for _, u := range users {
		n += int(counts[u])
	}
	return n, true
}

func (b apiBackend) GetState(ctx context.Context, user string) (map[string]string, error) {
	return b.n.state.GetState(ctx, user)
}

func (b apiBackend) SetState(ctx context.Context, user string, fields map[string]string) error {
	return b.n.state.SetState(ctx, user, fields)
}

func (b apiBackend) DeleteState(ctx context.Context, user string, fields ...string) error {
	return b.n.state.DeleteState(ctx, user, fields...)
}

func (b apiBackend) Presence(ctx context.Context, users []string) (map[string]uint32, error) {
	return b.n.peers.Presence(ctx, users)
}

// PublishEvent goes into the targets' history with its event name (history
// on), or to every node as one command (history off).
func (b apiBackend) PublishEvent(ctx context.Context, users, topics []string, event, message string) error {
	if b.n.history == nil {
		return b.n.peers.PublishEvent(ctx, users, topics, event, message)
	}
	targets := make([]broker.Target, 0, len(users)+len(topics))
	for _, u := range users {
		targets = append(targets, broker.Target{Name: u})
	}
	for _, t := range topics {
		targets = append(targets, broker.Target{Topic: true, Name: t})
	}
	_, err := b.n.history.Append(ctx, targets, []byte(message), event)
	return err
}

func (b apiBackend) Disconnect(ctx context.Context, user string) error {
	return b.n.peers.Disconnect(ctx, user)
}

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
// publishes only (a plain PUBLISH per target, history off).
func (b apiBackend) Publish(ctx context.Context, targets []broker.Target, payload []byte) ([]broker.Cursor, error) {
	if b.n.history != nil {
		return b.n.history.Append(ctx, targets, payload, "")
	}
	channels := make([]string, len(targets))
	for i, t := range targets {
		channels[i] = t.Channel()
	}
	return nil, b.n.broker.PublishMany(ctx, channels, payload)
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

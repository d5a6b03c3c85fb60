package node

import (
	"context"

	"github.com/notify-dev/notify/api"
	"github.com/notify-dev/notify/auth"
)

// apiBackend is the node as the server API sees it: the state store, the
// broker for publishes, peers for what involves every node.
type apiBackend struct{ n *Node }

var _ api.Backend = apiBackend{}

func (b apiBackend) Verify(token string) (auth.Claims, error) { return b.n.accept.Verify(token) }

func (b apiBackend) Publish(ctx context.Context, channels []string, payload []byte) error {
	return b.n.broker.PublishMany(ctx, channels, payload)
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

func (b apiBackend) PublishEvent(ctx context.Context, users, topics []string, event, message string) error {
	return b.n.peers.PublishEvent(ctx, users, topics, event, message)
}

func (b apiBackend) Disconnect(ctx context.Context, user string) error {
	return b.n.peers.Disconnect(ctx, user)
}

package node

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/notify-dev/notify/api"
	"github.com/notify-dev/notify/auth"
	"github.com/notify-dev/notify/broker"
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

// Presence counts the connections on this node.
func (b apiBackend) Presence(_ context.Context, users []string) (map[string]uint32, error) {
	out := make(map[string]uint32, len(users))
	for _, u := range users {
		out[u] = uint32(b.n.hub.userCount(u))
	}
	return out, nil
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
	Op   string `json:"op"`
	User string `json:"user,omitempty"`
}

const opDisconnect = "disconnect"

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
			cl.conn.Close(transport.CloseDisconnected, "disconnected")
			closed++
		}
		if closed > 0 {
			n.log.Info("user disconnected by the API", "user", c.User, "connections", closed)
		}
	default:
		// A newer node's command: ignore it rather than fail.
		n.log.Debug("unknown control message ignored", "op", c.Op)
	}
}

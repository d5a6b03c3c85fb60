package mesh

import (
	"context"
	"errors"
	"fmt"

	"github.com/notify-dev/notify/broker"
)

// Publish sends payload on channel: a user's message to the user's owner
// (this node's handler when it is this node), a topic's message and a node
// command (broker.ControlChannel) to every member and this node. Other
// channels reach nobody, as on Redis.
//
// It returns once the message is delivered here or queued for its peers:
// queued is not delivered (a peer unreachable for the retry period never
// gets it; notify_mesh_dropped_total counts it). A user's message that
// cannot even be queued (the owner's queue is full, or the owner is not a
// member) fails with an error wrapping broker.ErrUnavailable; a topic's is
// counted, not failed, when some peer's queue refuses it.
func (m *Mesh) Publish(ctx context.Context, channel string, payload []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var shared string
	return m.publish(channel, payload, &shared)
}

// PublishMany publishes payload on every channel, in order: the messages
// for one peer are queued in this order.
func (m *Mesh) PublishMany(ctx context.Context, channels []string, payload []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var shared string // one copy of the payload, for every link
	var errs []error
	for _, ch := range channels {
		if err := m.publish(ch, payload, &shared); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// publish routes one message; *shared is the payload as a string, made on
// first need and kept for the next channels.
func (m *Mesh) publish(channel string, payload []byte, shared *string) error {
	t, ok := broker.ParseChannel(channel)
	remote := func() string {
		if *shared == "" && len(payload) > 0 {
			*shared = string(payload)
		}
		return *shared
	}
	switch {
	case channel == broker.ControlChannel || (ok && t.Topic):
		if len(channel)+len(payload) > m.maxFrame-entryOverhead {
			return fmt.Errorf("mesh: a %d-byte message does not fit a link frame", len(payload))
		}
		m.broadcast(channel, remote())
	case !ok:
		return nil
	case t.Name != "":
		if owner := m.ownerOf(t.Name); owner != "" {
			return m.sendTo(owner, channel, remote())
		}
	}
	return m.local.Publish(context.Background(), channel, payload)
}

// broadcast queues a message for every peer.
func (m *Mesh) broadcast(channel, payload string) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, l := range m.links {
		if err := l.enqueue(channel, payload); err != nil {
			m.metrics.drop(dropReason(err), 1)
		}
	}
}

// sendTo queues a message for one peer.
func (m *Mesh) sendTo(peer, channel, payload string) error {
	if len(channel)+len(payload) > m.maxFrame-entryOverhead {
		return fmt.Errorf("mesh: a %d-byte message does not fit a link frame", len(payload))
	}
	l, err := m.linkTo(peer)
	if err == nil {
		err = l.enqueue(channel, payload)
	}
	if err != nil {
		m.metrics.drop(dropReason(err), 1)
		return fmt.Errorf("mesh: to %s: %w: %w", peer, broker.ErrUnavailable, err)
	}
	return nil
}

func dropReason(err error) string {
	switch {
	case errors.Is(err, errQueueFull):
		return reasonQueueFull
	case errors.Is(err, errLinkClosed):
		return reasonLeft
	}
	return reasonUnreachable
}

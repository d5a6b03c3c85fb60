package mesh

import (
	"context"
	"errors"
	"fmt"

	"github.com/notify-dev/notify/broker"
)

// A user's state lives on the user's owner (this node's ring decides): the
// calls for users owned elsewhere are forwarded over the link, and answered
// by the peer from its own store, whatever its own ring says (while views
// disagree, a write may land on a node that no longer owns the user; the
// hand-over after the ring change moves it on).

// GetState returns the user's fields, read on its owner.
func (m *Mesh) GetState(ctx context.Context, user string) (map[string]string, error) {
	owner := m.ownerOf(user)
	if owner == "" {
		return m.local.GetState(ctx, user)
	}
	fields, err := m.callOwner(ctx, owner, opGet, user, nil)
	if err == nil && fields == nil {
		fields = map[string]string{}
	}
	return fields, err
}

// SetState merges fields into the user's state on its owner.
func (m *Mesh) SetState(ctx context.Context, user string, fields map[string]string) error {
	if len(fields) == 0 {
		return ctx.Err()
	}
	owner := m.ownerOf(user)
	if owner == "" {
		return m.local.SetState(ctx, user, fields)
	}
	_, err := m.callOwner(ctx, owner, opSet, user, fields)
	return err
}

// DeleteState removes the named fields (none: the whole state) on the
// user's owner.
func (m *Mesh) DeleteState(ctx context.Context, user string, fields ...string) error {
	owner := m.ownerOf(user)
	if owner == "" {
		return m.local.DeleteState(ctx, user, fields...)
	}
	names := make(map[string]string, len(fields))
	for _, f := range fields {
		names[f] = ""
	}
	_, err := m.callOwner(ctx, owner, opDel, user, names)
	return err
}

// callOwner makes a state call on the owner, bounded by the call timeout.
// Its errors wrap broker.ErrUnavailable: the state is there, out of reach.
func (m *Mesh) callOwner(ctx context.Context, owner string, op byte, user string, fields map[string]string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.CallTimeout)
	defer cancel()
	l, err := m.linkTo(owner)
	var out map[string]string
	if err == nil {
		out, err = l.do(ctx, op, user, fields)
	}
	if err != nil {
		m.metrics.callsFailed.Inc()
		return nil, fmt.Errorf("mesh: state of %q on its owner %s: %w: %w", user, owner, broker.ErrUnavailable, err)
	}
	m.metrics.callsOK.Inc()
	return out, nil
}

// serveCall runs a peer's state call on this node's store.
func (m *Mesh) serveCall(c callFrame) (map[string]string, error) {
	ctx := context.Background()
	switch c.op {
	case opGet:
		return m.local.GetState(ctx, c.user)
	case opSet:
		return nil, m.local.SetState(ctx, c.user, c.fields)
	case opDel:
		names := make([]string, 0, len(c.fields))
		for k := range c.fields {
			names = append(names, k)
		}
		return nil, m.local.DeleteState(ctx, c.user, names...)
	case opMerge:
		return nil, m.local.MergeState(ctx, c.user, c.fields)
	}
	return nil, errors.New("unknown state operation")
}

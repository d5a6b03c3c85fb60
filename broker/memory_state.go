package broker

import (
	"context"
	"maps"
	"slices"
)

// What the cluster broker (broker/mesh) needs of a Memory it keeps the
// owned users' state in: moving a user's state to its new owner when the
// ring changes, without losing what was written meanwhile on either side.

// MergeState adds the fields the user's state lacks and keeps those it has:
// a state handed over by a former owner must not undo what was written on
// the new owner since it took over.
func (m *Memory) MergeState(ctx context.Context, userID string, fields map[string]string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(fields) == 0 {
		return nil
	}
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	s := m.state[userID]
	if s == nil {
		s = make(map[string]string, len(fields))
		m.state[userID] = s
	}
	for k, v := range fields {
		if _, ok := s[k]; !ok {
			s[k] = v
		}
	}
	return nil
}

// StateUsers returns the ids of the users that have a state, sorted.
func (m *Memory) StateUsers() []string {
	m.stateMu.Lock()
	users := slices.Collect(maps.Keys(m.state))
	m.stateMu.Unlock()
	slices.Sort(users)
	return users
}

// DropState removes the fields of the user's state that still hold the
// values in handed (a copy taken before it was handed over); a field
// written since keeps its newer value.
func (m *Memory) DropState(userID string, handed map[string]string) {
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	s := m.state[userID]
	for k, v := range handed {
		if cur, ok := s[k]; ok && cur == v {
			delete(s, k)
		}
	}
	if len(s) == 0 {
		delete(m.state, userID)
	}
}

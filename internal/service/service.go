// Package service is the one lifecycle of a node's long-running parts.
// Each part is a Service: Run serves until its context ends and returns once
// everything it started has stopped. A Group starts services in order and
// stops them in reverse, each finished before the next is told to stop (as
// grafana/dskit's service manager does, in miniature).
package service

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Service is a long-running part of a node.
type Service interface {
	// Run serves until ctx ends, then returns nil after everything it
	// started has stopped. Returning earlier means it failed: the error says
	// why.
	Run(ctx context.Context) error
}

// Func adapts a function to Service.
type Func func(ctx context.Context) error

// Run calls f.
func (f Func) Run(ctx context.Context) error { return f(ctx) }

var _ Service = Func(nil)

// Group runs services, each in a goroutine with a context of its own.
type Group struct {
	mu       sync.Mutex
	running  []*running
	stopping bool
	failed   chan Failure // size 1: the first service that ended early
}

// Failure is a service that ended before it was told to stop.
type Failure struct {
	Name string
	Err  error // nil when it returned nil early
}

func (f Failure) Error() string {
	if f.Err == nil {
		return fmt.Sprintf("service %s ended early", f.Name)
	}
	return fmt.Sprintf("service %s failed: %v", f.Name, f.Err)
}

type running struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{}
	err    error // set before done is closed
}

// NewGroup returns an empty group.
func NewGroup() *Group {
	return &Group{failed: make(chan Failure, 1)}
}

// Go starts s under name. It returns an error, starting nothing, once Stop
// has begun.
func (g *Group) Go(name string, s Service) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopping {
		return fmt.Errorf("service %s: group is stopping", name)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{name: name, cancel: cancel, done: make(chan struct{})}
	g.running = append(g.running, r)
	go func() {
		defer close(r.done)
		r.err = s.Run(ctx)
		if ctx.Err() == nil {
			select {
			case g.failed <- Failure{Name: name, Err: r.err}:
			default: // one failure is enough to stop the node
			}
		}
	}()
	return nil
}

// Failed delivers the first service that ended before Stop.
func (g *Group) Failed() <-chan Failure { return g.failed }

// Stop stops every service in reverse order of start, waiting for each to
// return before stopping the next. When ctx ends first, the remaining
// services are told to stop at once and Stop still waits for all of them
// (every goroutine has an exit that someone waits for); ctx's error is then
// part of the result, with every error a service returned.
func (g *Group) Stop(ctx context.Context) error {
	g.mu.Lock()
	g.stopping = true
	rs := g.running
	g.running = nil
	g.mu.Unlock()

	var errs []error
	for i := len(rs) - 1; i >= 0; i-- {
		r := rs[i]
		r.cancel()
		select {
		case <-r.done:
		case <-ctx.Done():
			for _, rest := range rs[:i] {
				rest.cancel()
			}
			<-r.done
		}
		if r.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.name, r.err))
		}
	}
	if err := ctx.Err(); err != nil {
		errs = append(errs, fmt.Errorf("stopping services: %w", err))
	}
	return errors.Join(errs...)
}

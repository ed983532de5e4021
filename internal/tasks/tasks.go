package tasks

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrClosed is what a Group answers to work offered once it was stopped.
var ErrClosed = errors.New("tasks: the group is closed")

// Group runs functions in goroutines it owns. The zero value is not
// usable: call New.
type Group struct {
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	closed  bool
	running int           // functions started and not yet returned
	idle    chan struct{} // closed once closed and running == 0
}

// New returns an open group.
func New() *Group {
	ctx, cancel := context.WithCancel(context.Background())
	return &Group{ctx: ctx, cancel: cancel, idle: make(chan struct{})}
}

// Go runs fn in a new goroutine with the group's context, which Stop
// cancels; fn must return soon after. It returns ErrClosed, and runs
// nothing, once the group was stopped.
func (g *Group) Go(fn func(ctx context.Context)) error {
	if !g.enter() {
		return ErrClosed
	}
	go func() {
		defer g.leave()
		fn(g.ctx)
	}()
	return nil
}

// AfterFunc runs fn, with the group's context, in the timer's goroutine
// once d has passed, unless the timer or the group was stopped by then;
// Close waits for a run in progress. It returns ErrClosed, and arms
// nothing, once the group was stopped.
func (g *Group) AfterFunc(d time.Duration, fn func(ctx context.Context)) (*time.Timer, error) {
	if g.isClosed() {
		return nil, ErrClosed
	}
	return time.AfterFunc(d, func() {
		if !g.enter() {
			return
		}
		defer g.leave()
		fn(g.ctx)
	}), nil
}

// Stop refuses new work and cancels the context of the running
// functions, without waiting for them: a component that still needs one
// of them for a while (a serve loop while it drains) stops the group
// first and closes it last.
func (g *Group) Stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closed {
		g.closed = true
		g.cancel()
		if g.running == 0 {
			close(g.idle)
		}
	}
}

// Close stops the group (Stop) and waits until its functions have
// returned, or ctx ends (then ctx's error). It may be called more than
// once, and concurrently.
func (g *Group) Close(ctx context.Context) error {
	g.Stop()
	select {
	case <-g.idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// enter counts one more running function, unless the group is closed.
func (g *Group) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.running++
	return true
}

func (g *Group) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.running--
	if g.closed && g.running == 0 {
		close(g.idle)
	}
}

func (g *Group) isClosed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

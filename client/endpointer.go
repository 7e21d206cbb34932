package client

import (
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/endpoint"
	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
)

// Endpointer turns the instances of an Instancer into endpoints through a
// Factory, one per instance, and implements go-kit's sd.Endpointer.
//
// It differs from go-kit's DefaultEndpointer in what a long-running program
// needs: an Instancer error keeps the endpoints known last (Consul down does
// not mean the instances are), a removed instance's connection is closed
// only after a grace period so calls in flight on it can finish, Close
// closes every connection and waits for its goroutine, and Endpoints is a
// lock-free read of a snapshot that changes only when the instances do.
type Endpointer struct {
	instancer kitsd.Instancer
	factory   kitsd.Factory
	logger    log.Logger
	grace     time.Duration

	events chan kitsd.Event
	done   chan struct{}

	current atomic.Pointer[snapshot]

	mu      sync.Mutex // guards what follows
	byInst  map[string]*node
	closing map[*time.Timer]io.Closer
	closed  bool
}

// node is one instance the Endpointer holds. A node lives as long as its
// instance stays in discovery, across any number of updates.
type node struct {
	instance string
	e        endpoint.Endpoint
	closer   io.Closer
}

// snapshot is the Endpointer's view at one moment; it is never modified,
// only replaced.
type snapshot struct {
	nodes     []*node // in instance order
	endpoints []endpoint.Endpoint
}

var _ kitsd.Endpointer = (*Endpointer)(nil)

// NewEndpointer subscribes to instancer and builds endpoints with factory;
// the state the instancer sends on Register is applied before it returns.
// The connection of an instance that leaves is closed after grace.
func NewEndpointer(instancer kitsd.Instancer, factory kitsd.Factory, logger log.Logger, grace time.Duration) *Endpointer {
	if instancer == nil || factory == nil || logger == nil {
		panic("client: NewEndpointer needs an instancer, a factory and a logger")
	}
	e := &Endpointer{
		instancer: instancer,
		factory:   factory,
		logger:    logger,
		grace:     grace,
		events:    make(chan kitsd.Event, 1),
		done:      make(chan struct{}),
		byInst:    map[string]*node{},
		closing:   map[*time.Timer]io.Closer{},
	}
	e.current.Store(&snapshot{})
	// go-kit Instancers send their current state on Register; apply it
	// before returning, so that a new Endpointer already has endpoints.
	instancer.Register(e.events)
	select {
	case ev := <-e.events:
		e.handle(ev)
	default:
	}
	go e.receive()
	return e
}

// Endpoints implements sd.Endpointer. Do not modify the returned slice.
func (e *Endpointer) Endpoints() ([]endpoint.Endpoint, error) {
	return e.current.Load().endpoints, nil
}

func (e *Endpointer) snapshot() *snapshot { return e.current.Load() }

func (e *Endpointer) receive() {
	defer close(e.done)
	for ev := range e.events {
		e.handle(ev)
	}
}

func (e *Endpointer) handle(ev kitsd.Event) {
	if ev.Err != nil {
		_ = level.Warn(e.logger).Log("msg", "discovery failed; keeping the endpoints known last", "endpoints", len(e.snapshot().nodes), "err", ev.Err)
		return
	}
	e.update(ev.Instances)
}

func (e *Endpointer) update(instances []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	instances = slices.Compact(slices.Sorted(slices.Values(instances)))
	next := make(map[string]*node, len(instances))
	snap := &snapshot{nodes: make([]*node, 0, len(instances)), endpoints: make([]endpoint.Endpoint, 0, len(instances))}
	for _, inst := range instances {
		n, ok := e.byInst[inst]
		if !ok {
			ep, closer, err := e.factory(inst)
			if err != nil {
				_ = level.Error(e.logger).Log("msg", "factory failed; instance skipped", "instance", inst, "err", err)
				continue
			}
			n = &node{instance: inst, e: ep, closer: closer}
		}
		next[inst] = n
		snap.nodes = append(snap.nodes, n)
		snap.endpoints = append(snap.endpoints, n.e)
	}
	for inst, n := range e.byInst {
		if _, ok := next[inst]; !ok && n.closer != nil {
			e.closeLater(inst, n.closer)
		}
	}
	e.byInst = next
	e.current.Store(snap)
}

// closeLater closes c after the grace period; e.mu is held.
func (e *Endpointer) closeLater(inst string, c io.Closer) {
	var t *time.Timer
	t = time.AfterFunc(e.grace, func() {
		e.mu.Lock()
		_, pending := e.closing[t]
		delete(e.closing, t)
		e.mu.Unlock()
		if pending {
			e.closeOne(inst, c)
		}
	})
	e.closing[t] = c
}

func (e *Endpointer) closeOne(inst string, c io.Closer) {
	if err := c.Close(); err != nil {
		_ = level.Warn(e.logger).Log("msg", "closing endpoint", "instance", inst, "err", err)
	}
}

// Close unsubscribes from the Instancer (it does not stop it: whoever made it
// owns it), closes every connection, those in their grace period included,
// and waits for the Endpointer's goroutine. Endpoints is empty afterwards.
func (e *Endpointer) Close() error {
	e.instancer.Deregister(e.events)
	close(e.events)
	<-e.done

	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	for inst, n := range e.byInst {
		if n.closer != nil {
			e.closeOne(inst, n.closer)
		}
	}
	// Whoever takes a connection out of closing closes it: here, or the
	// timer's function if it got there first.
	for t, c := range e.closing {
		t.Stop()
		e.closeOne("", c)
	}
	clear(e.byInst)
	clear(e.closing)
	e.current.Store(&snapshot{})
	return nil
}

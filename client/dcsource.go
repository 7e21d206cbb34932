package client

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"

	"github.com/trimkit/trimkit/sd"
)

// bandUpdate is the state of one band of a banded source: the instances
// calls may go to and, when known, how many its datacenter has
// registered, passing or not (-1: unknown). With err set its watch
// failed: instances are the ones it knew last.
type bandUpdate struct {
	band       int
	instances  []string
	registered int
	err        error
}

// bandSource is discovery by bands: an Endpointer whose Instancer is one
// subscribes to it instead of to its go-kit events. registerBands sends
// each band's state at once, then each band's every change, to ch,
// blocking; it returns the number of bands.
type bandSource interface {
	registerBands(ch chan<- bandUpdate) int
	deregisterBands(ch chan<- bandUpdate)
}

// dcSource watches a service in several datacenters, one band each, in
// order of preference: in each, two watches of the process's shared
// ones, of its passing instances (where calls go) and of all its
// instances, passing or not (how many the band has: a datacenter whose
// instances crashed and are critical is unhealthy, one whose instances
// were deregistered is smaller). It is a go-kit Instancer too, of every
// band's instances together, for code that wants one.
type dcSource struct {
	names       []string
	listed, all []*sd.Instancer

	mu    sync.Mutex
	state []bandUpdate
	subs  []chan<- bandUpdate
	kit   *pushInstancer // the go-kit face of it, fed on every change

	feeds []feed
	wg    sync.WaitGroup
}

type feed struct {
	inst *sd.Instancer
	ch   chan kitsd.Event
}

// newDCSource subscribes to the watches, listed[i] and all[i] of
// datacenter names[i], which it owns from then on (Stop stops them), and
// applies what they know before it returns.
func newDCSource(names []string, listed, all []*sd.Instancer) *dcSource {
	s := &dcSource{names: names, listed: listed, all: all, state: make([]bandUpdate, len(names)), kit: &pushInstancer{}}
	for b := range names {
		s.state[b] = bandUpdate{band: b, registered: -1}
		for _, w := range []struct {
			inst   *sd.Instancer
			listed bool
		}{{listed[b], true}, {all[b], false}} {
			f := feed{inst: w.inst, ch: make(chan kitsd.Event, 1)}
			w.inst.Register(f.ch)
			s.set(b, w.listed, <-f.ch) // sd's Instancers send their state on Register
			s.feeds = append(s.feeds, f)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				for ev := range f.ch {
					s.set(b, w.listed, ev)
				}
			}()
		}
	}
	return s
}

// set applies an event of band b's watch of its passing instances
// (listed) or of all of them, and passes the band's new state on.
func (s *dcSource) set(b int, listed bool, ev kitsd.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &s.state[b]
	switch {
	case listed:
		// With Err, Instances are the ones known last: kept, as fail-static
		// wants (a watch that fails is no empty list).
		st.instances, st.err = ev.Instances, ev.Err
	case ev.Err == nil:
		st.registered = len(ev.Instances)
	default:
		return // the count known last stands
	}
	for _, ch := range s.subs {
		ch <- *st
	}
	s.kit.update(s.allInstances())
}

// allInstances are every band's instances, sorted, each once. s.mu is
// held.
func (s *dcSource) allInstances() []string {
	var all []string
	for _, st := range s.state {
		all = append(all, st.instances...)
	}
	return slices.Compact(slices.Sorted(slices.Values(all)))
}

func (s *dcSource) registerBands(ch chan<- bandUpdate) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subs = append(s.subs, ch)
	for _, st := range s.state {
		ch <- st
	}
	return len(s.state)
}

func (s *dcSource) deregisterBands(ch chan<- bandUpdate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, c := range s.subs {
		if c == ch {
			s.subs = append(s.subs[:i], s.subs[i+1:]...)
			return
		}
	}
}

// Register implements go-kit's sd.Instancer: every band's instances
// together.
func (s *dcSource) Register(ch chan<- kitsd.Event) { s.kit.Register(ch) }

// Deregister implements go-kit's sd.Instancer.
func (s *dcSource) Deregister(ch chan<- kitsd.Event) { s.kit.Deregister(ch) }

// NoInstances explains a call that found no instance in any datacenter:
// each one's explanation (an *sd.NoInstancesError), joined. It wraps
// lb.ErrNoEndpoints.
func (s *dcSource) NoInstances() error {
	var (
		errs []error
		text []string
	)
	for _, l := range s.listed {
		err := l.NoInstances()
		errs = append(errs, err)
		text = append(text, err.Error())
	}
	return &noInstancesIn{text: strings.Join(text, "; "), errs: append(errs, lb.ErrNoEndpoints)}
}

// noInstancesIn is dcSource's NoInstances: every datacenter's.
type noInstancesIn struct {
	text string
	errs []error
}

func (e *noInstancesIn) Error() string   { return e.text }
func (e *noInstancesIn) Unwrap() []error { return e.errs }

// Stop stops the watches and waits for what passes their events on.
func (s *dcSource) Stop() {
	for _, f := range s.feeds {
		f.inst.Deregister(f.ch)
		close(f.ch)
	}
	s.wg.Wait()
	for b := range s.names {
		s.listed[b].Stop()
		s.all[b].Stop()
	}
}

// datacenterList is ds as a Config says them, or an error for a name
// Consul cannot hold or a repeat.
func datacenterList(ds []string) error {
	var errs []error
	seen := map[string]bool{}
	for _, d := range ds {
		switch {
		case d == "":
			errs = append(errs, errors.New("an empty datacenter name"))
		case strings.ContainsAny(d, "/?#&= \t\n"):
			errs = append(errs, fmt.Errorf("datacenter %q: not a name Consul gives one", d))
		case seen[d]:
			errs = append(errs, fmt.Errorf("datacenter %q named twice", d))
		}
		seen[d] = true
	}
	return errors.Join(errs...)
}

package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/trimkit/trimkit/sd"
)

// bandState is the state of one band of a banded source: its
// datacenter, the instances calls may go to and, when known, how many
// its datacenter has registered, passing or not (-1: unknown). With err
// set its watch failed: instances are the ones it knew last.
type bandState struct {
	band       int
	name       string
	instances  []string
	registered int
	err        error
}

// bandUpdate is the state of some bands, to apply together: when bands
// change places (a nearer datacenter), an instance is in one of them
// throughout.
type bandUpdate []bandState

// bandSource is discovery by bands: an Endpointer whose Instancer is one
// subscribes to it instead of to its go-kit events. registerBands sends
// every band's state at once, in one update, then each change, to ch,
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
	state []bandState // by datacenter, in names' order
	order []int       // the datacenter of each band
	subs  []chan<- bandUpdate
	kit   *pushInstancer // the go-kit face of it, fed on every change

	feeds []feed
	wg    sync.WaitGroup
	stop  context.CancelFunc // ends the nearest-first refresh; nil without
	// closeIdle closes the idle connections of the Consul client that
	// reads the datacenters' order; set once, before it is used.
	closeIdle func()
}

type feed struct {
	inst *sd.Instancer
	ch   chan kitsd.Event
}

var _ bandSource = (*dcSource)(nil)

// newDCSource subscribes to the watches, listed[i] and all[i] of
// datacenter names[i], which it owns from then on (Stop stops them), and
// applies what they know before it returns.
func newDCSource(names []string, listed, all []*sd.Instancer) *dcSource {
	s := &dcSource{names: names, listed: listed, all: all, state: make([]bandState, len(names)), kit: &pushInstancer{}}
	for b, name := range names {
		s.state[b] = bandState{band: b, name: name, registered: -1}
		s.order = append(s.order, b)
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

// set applies an event of datacenter b's watch of its passing instances
// (listed) or of all of them, and passes its band's new state on.
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
		ch <- bandUpdate{*st}
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
	ch <- s.bands()
	return len(s.state)
}

// bands is every band's state, in band order. s.mu is held.
func (s *dcSource) bands() bandUpdate {
	u := make(bandUpdate, len(s.order))
	for band, dc := range s.order {
		u[band] = s.state[dc]
	}
	return u
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

// nearestEvery is how often a "_nearest" source reads the datacenters'
// order again: network coordinates move slowly.
const nearestEvery = 30 * time.Second

// refreshOrder reads the datacenters' order by distance every
// nearestEvery, until Stop, and reorders the bands when it changed.
func (s *dcSource) refreshOrder(nearest func(context.Context) ([]string, error), logger log.Logger) {
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(nearestEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			qctx, qcancel := context.WithTimeout(ctx, 5*time.Second)
			order, err := nearest(qctx)
			qcancel()
			if err != nil {
				if ctx.Err() == nil {
					_ = level.Warn(logger).Log("msg", "could not read the datacenters' order by distance; keeping the last", "err", err)
				}
				continue
			}
			if s.reorder(order) {
				_ = level.Info(logger).Log("msg", "datacenters in a new order, nearest first", "order", strings.Join(order, ","))
			}
		}
	}()
}

// reorder puts the bands in the order of names, the datacenters nearest
// first (those it does not name keep their order, after it; names it
// does not watch are left out), and, when that changes the order, passes
// every band's state on, in one update. It reports whether it did.
func (s *dcSource) reorder(names []string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	var order []int
	for _, n := range names {
		if dc := slices.Index(s.names, n); dc >= 0 && !slices.Contains(order, dc) {
			order = append(order, dc)
		}
	}
	for _, dc := range s.order {
		if !slices.Contains(order, dc) {
			order = append(order, dc)
		}
	}
	if slices.Equal(order, s.order) {
		return false
	}
	s.order = order
	for band, dc := range order {
		s.state[dc].band = band
	}
	u := s.bands()
	for _, ch := range s.subs {
		ch <- u
	}
	return true
}

// Stop stops the watches and waits for what passes their events on.
func (s *dcSource) Stop() {
	if s.stop != nil {
		s.stop()
	}
	for _, f := range s.feeds {
		f.inst.Deregister(f.ch)
		close(f.ch)
	}
	s.wg.Wait()
	for b := range s.names {
		s.listed[b].Stop()
		s.all[b].Stop()
	}
	if s.closeIdle != nil {
		s.closeIdle()
	}
}

// nearestDCs, as the one datacenter of Config.Datacenters, stands for
// every datacenter the agent's servers know, nearest first (by Consul's
// network coordinates), in an order read again every 30s.
const nearestDCs = "_nearest"

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
		case d == nearestDCs && len(ds) > 1:
			errs = append(errs, fmt.Errorf("%s stands for every datacenter, nearest first: name it alone", nearestDCs))
		}
		seen[d] = true
	}
	return errors.Join(errs...)
}

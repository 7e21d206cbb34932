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

// subscription is a subscriber's to an Instancer: to its bands when it is
// a bandSource and the subscriber keeps bands apart, else to its go-kit
// events. The Endpointer and a ClientConn's resolver both subscribe so.
type subscription struct {
	instancer  kitsd.Instancer
	events     chan kitsd.Event
	bandSrc    bandSource // nil: events
	bandEvents chan bandUpdate
}

// subscribe subscribes to instancer, to its bands when banded and it has
// them; it returns how many bands (0: events). Either way, its state comes
// at once, on the subscription's channel.
func subscribe(instancer kitsd.Instancer, banded bool) (subscription, int) {
	s := subscription{instancer: instancer}
	if src, ok := instancer.(bandSource); ok && banded {
		s.bandSrc, s.bandEvents = src, make(chan bandUpdate, 1)
		return s, src.registerBands(s.bandEvents)
	}
	s.events = make(chan kitsd.Event, 1)
	instancer.Register(s.events)
	return s, 0
}

// cancel unsubscribes and closes the subscription's channel, for the
// subscriber's receiving loop to end.
func (s subscription) cancel() {
	if s.bandSrc != nil {
		s.bandSrc.deregisterBands(s.bandEvents)
		close(s.bandEvents)
		return
	}
	s.instancer.Deregister(s.events)
	close(s.events)
}

// dcSource watches a service in one or more datacenters, in order of
// preference, each one band or, with a locality (Config's Region and
// Zone), one band per locality tier: the caller's zone, its region's
// other zones, the rest. In each datacenter, two watches of the process's
// shared ones: of its passing instances (where calls go) and of all its
// instances, passing or not (how many a band has: a datacenter whose
// instances crashed and are critical is unhealthy, one whose instances
// were deregistered is smaller). It is a go-kit Instancer too, of every
// band's instances together, for code that wants one.
type dcSource struct {
	names       []string // of the datacenters; "" for the agent's own
	listed, all []*sd.Instancer
	near        locality // the caller's
	tiers       int      // locality tiers a datacenter has: near.tiers()

	mu    sync.Mutex
	last  []lastSeen  // by datacenter: what its watches said last
	state []bandState // by datacenter and tier: state[dc*tiers+tier]
	// With Config.Near, each node's estimated round trip from the node it
	// names, in datacenter nearDC (the agent's); nil until read.
	nearDC string
	dist   map[string]time.Duration
	order  []int // the datacenters, nearest first (Datacenters' order)
	subs   []chan<- bandUpdate
	// kit is the go-kit face of it, fed on every change once kitUsed: a
	// client of several bands subscribes to the bands instead.
	kit     *pushInstancer
	kitUsed bool

	feeds []feed
	wg    sync.WaitGroup
	ctx   context.Context // of the refreshes (nearest first, Near); Stop ends it
	stop  context.CancelFunc
	// closeIdle closes the idle connections of the Consul client that
	// reads the datacenters' order; set once, before it is used.
	closeIdle func()
}

// lastSeen is what a datacenter's two watches said last: its passing
// instances (with the error of a watch that failed: the ones it knew
// last) and, once it has said, all its instances.
type lastSeen struct {
	listed, all []string
	err         error
	allKnown    bool
}

type feed struct {
	inst *sd.Instancer
	ch   chan kitsd.Event
}

var _ bandSource = (*dcSource)(nil)

// locality is a caller's place: with a Zone, instances in it are
// preferred, then those of its Region (when given), then the rest; with
// near, within each of those, the instances on nearer nodes first.
type locality struct {
	region, zone string
	near         bool
}

// places is how many places (zone, region, elsewhere) a datacenter's
// instances fall in.
func (l locality) places() int {
	n := 1
	if l.zone != "" {
		n++
	}
	if l.region != "" {
		n++
	}
	return n
}

// tiers is how many locality tiers a datacenter's instances fall in: its
// places, each split in two with near.
func (l locality) tiers() int {
	if l.near {
		return 2 * l.places()
	}
	return l.places()
}

// tierOf is the tier of an instance registered in region and zone, on a
// node far from the caller's or not: 0 is the nearest. An instance
// without a locality is in the last place.
func (l locality) tierOf(region, zone string, far bool) int {
	t := l.placeOf(region, zone)
	if l.near {
		t *= 2
		if far {
			t++
		}
	}
	return t
}

// placeOf is the place of an instance registered in region and zone.
func (l locality) placeOf(region, zone string) int {
	t := 0
	if l.zone != "" {
		if zone == l.zone && (l.region == "" || region == l.region) {
			return t
		}
		t++
	}
	if l.region != "" && region == l.region {
		return t
	}
	return l.places() - 1
}

// name is the name of tier t of datacenter dc, for the page and the logs.
func (l locality) name(dc string, t int) string {
	if dc == "" {
		dc = "local"
	}
	nodes := ""
	if l.near {
		nodes = "nearby nodes"
		if t%2 == 1 {
			nodes = "farther nodes"
		}
		t /= 2
	}
	place := ""
	switch {
	case l.places() == 1:
	case l.zone != "" && t == 0:
		place = "zone " + l.zone
	case l.region != "" && t == l.places()-2:
		place = "region " + l.region
	default:
		place = "elsewhere"
	}
	switch {
	case place != "" && nodes != "":
		return dc + " " + place + ", " + nodes
	case place != "" || nodes != "":
		return dc + " " + place + nodes
	}
	return dc
}

// newDCSource subscribes to the watches, listed[i] and all[i] of
// datacenter names[i], which it owns from then on (Stop stops them), and
// applies what they know before it returns.
func newDCSource(names []string, listed, all []*sd.Instancer, near locality) *dcSource {
	k := near.tiers()
	s := &dcSource{names: names, listed: listed, all: all, near: near, tiers: k, last: make([]lastSeen, len(names)), state: make([]bandState, len(names)*k), kit: &pushInstancer{}}
	s.ctx, s.stop = context.WithCancel(context.Background())
	for dc, name := range names {
		for t := range k {
			s.state[dc*k+t] = bandState{band: dc*k + t, name: near.name(name, t), registered: -1}
		}
		s.order = append(s.order, dc)
		for _, w := range []struct {
			inst   *sd.Instancer
			listed bool
		}{{listed[dc], true}, {all[dc], false}} {
			f := feed{inst: w.inst, ch: make(chan kitsd.Event, 1)}
			w.inst.Register(f.ch)
			s.set(dc, w.listed, <-f.ch) // sd's Instancers send their state on Register
			s.feeds = append(s.feeds, f)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				for ev := range f.ch {
					s.set(dc, w.listed, ev)
				}
			}()
		}
	}
	return s
}

// bandWatches are the watches of the bands' datacenters, in band order.
func (s *dcSource) bandWatches() []*sd.Instancer {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*sd.Instancer
	for _, dc := range s.order {
		for range s.tiers {
			out = append(out, s.listed[dc])
		}
	}
	return out
}

// bandNames are the bands' names, in band order.
func (s *dcSource) bandNames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	for _, st := range s.bands() {
		names = append(names, st.name)
	}
	return names
}

// set applies an event of datacenter dc's watch of its passing instances
// (listed) or of all of them, and passes the new state of its bands on.
func (s *dcSource) set(dc int, listed bool, ev kitsd.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := &s.last[dc]
	switch {
	case listed:
		// With Err, Instances are the ones known last: kept, as
		// fail-static wants (a watch that fails is no empty list).
		l.listed, l.err = ev.Instances, ev.Err
	case ev.Err != nil:
		return // the counts known last stand
	default:
		l.all, l.allKnown = ev.Instances, true
	}
	s.send(s.split(dc))
}

// send passes u on to the subscribers. s.mu is held.
func (s *dcSource) send(u bandUpdate) {
	for _, ch := range s.subs {
		ch <- u
	}
	if s.kitUsed {
		s.kit.update(instancesOf(s.state))
	}
}

// split works out the state of datacenter dc's bands from what its
// watches said last: each instance's tier by the locality its entry
// says and, with Near, by its node's distance. s.mu is held.
func (s *dcSource) split(dc int) bandUpdate {
	l := s.last[dc]
	listed, all := s.placed(s.listed[dc], l.listed), s.placed(s.all[dc], l.all)
	cut, dist := s.nearCut(dc, listed, all)
	tiersOf := func(instances []placed) [][]string {
		split := make([][]string, s.tiers)
		for _, p := range instances {
			t := s.tiers - 1
			if p.found {
				d, known := dist[p.Node]
				t = s.near.tierOf(p.Region, p.Zone, known && d > cut)
			}
			split[t] = append(split[t], p.inst)
		}
		return split
	}
	listedBy, allBy := tiersOf(listed), tiersOf(all)
	u := make(bandUpdate, 0, s.tiers)
	for t := range s.tiers {
		st := &s.state[dc*s.tiers+t]
		st.instances, st.err = listedBy[t], l.err
		if l.allKnown {
			st.registered = len(allBy[t])
		}
		u = append(u, *st)
	}
	return u
}

// placed is an instance and, when found, its entry in its watch's
// answer: where it registered (locality, node).
type placed struct {
	inst  string
	found bool
	sd.Entry
}

// placed looks the entries of instances up in w, once each; with one
// tier a datacenter, none: nothing tells instances apart.
func (s *dcSource) placed(w *sd.Instancer, instances []string) []placed {
	out := make([]placed, len(instances))
	for i, inst := range instances {
		out[i].inst = inst
		if s.tiers > 1 {
			out[i].Entry, out[i].found = w.Entry(inst)
		}
	}
	return out
}

// nearCut is, with Near, in its datacenter, the distance beyond which an
// instance's node is far: twice the nearest one's of the listed and all
// instances (passing or not), or 1ms more, whichever is more; and the
// nodes' distances. Else none. s.mu is held.
func (s *dcSource) nearCut(dc int, listed, all []placed) (time.Duration, map[string]time.Duration) {
	if s.dist == nil || s.names[dc] != "" && s.names[dc] != s.nearDC {
		return 0, nil
	}
	nearest := time.Duration(-1)
	for _, p := range slices.Concat(listed, all) {
		if d, ok := s.dist[p.Node]; ok && p.found && (nearest < 0 || d < nearest) {
			nearest = d
		}
	}
	if nearest < 0 {
		return 0, nil
	}
	return max(2*nearest, nearest+time.Millisecond), s.dist
}

// setDistances applies the nodes' distances from Near's node, in
// datacenter dc, and passes on the state of the bands that changed, in
// one update.
func (s *dcSource) setDistances(dc string, dist map[string]time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nearDC, s.dist = dc, dist
	var u bandUpdate
	for i := range s.names {
		before := make([][]string, s.tiers)
		for t := range s.tiers {
			before[t] = s.state[i*s.tiers+t].instances
		}
		for t, st := range s.split(i) {
			if !slices.Equal(before[t], st.instances) {
				u = append(u, st)
			}
		}
	}
	if len(u) > 0 {
		s.send(u)
	}
}

// instancesOf are every band's instances, sorted, each once.
func instancesOf(bands []bandState) []string {
	var all []string
	for _, st := range bands {
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
	u := make(bandUpdate, 0, len(s.state))
	for _, dc := range s.order {
		u = append(u, s.state[dc*s.tiers:(dc+1)*s.tiers]...)
	}
	return u
}

func (s *dcSource) deregisterBands(ch chan<- bandUpdate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subs = slices.DeleteFunc(s.subs, func(c chan<- bandUpdate) bool { return c == ch })
}

// Register implements go-kit's sd.Instancer: every band's instances
// together.
func (s *dcSource) Register(ch chan<- kitsd.Event) {
	s.mu.Lock()
	if !s.kitUsed {
		s.kitUsed = true
		s.kit.update(instancesOf(s.state))
	}
	s.mu.Unlock()
	s.kit.Register(ch)
}

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

// readTimeout bounds one read of the datacenters' order or the nodes'
// distances, at the start and on each refresh.
const readTimeout = 5 * time.Second

// refreshOrder reads the datacenters' order by distance every
// nearestEvery, until Stop, and reorders the bands when it changed.
func (s *dcSource) refreshOrder(nearest func(context.Context) ([]string, error), logger log.Logger) {
	s.every(logger, "the datacenters' order by distance", func(ctx context.Context) error {
		order, err := nearest(ctx)
		if err != nil {
			return err
		}
		if s.reorder(order) {
			_ = level.Info(logger).Log("msg", "datacenters in a new order, nearest first", "order", strings.Join(order, ","))
		}
		return nil
	})
}

// refreshNear reads the nodes' distances every nearestEvery, until Stop,
// and moves the instances whose tier changed.
func (s *dcSource) refreshNear(distances func(context.Context) (string, map[string]time.Duration, error), logger log.Logger) {
	s.every(logger, "the nodes' distances", func(ctx context.Context) error {
		dc, dist, err := distances(ctx)
		if err != nil {
			return err
		}
		s.setDistances(dc, dist)
		return nil
	})
}

// every calls read every nearestEvery, with readTimeout to do it, until
// Stop, and warns of a failed read (of what) unless Stop ended it.
func (s *dcSource) every(logger log.Logger, what string, read func(ctx context.Context) error) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(nearestEvery)
		defer t.Stop()
		for {
			select {
			case <-s.ctx.Done():
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(s.ctx, readTimeout)
			err := read(ctx)
			cancel()
			if err != nil && s.ctx.Err() == nil {
				_ = level.Warn(logger).Log("msg", "could not read "+what+"; keeping the last", "err", err)
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
	for rank, dc := range order {
		for t := range s.tiers {
			s.state[dc*s.tiers+t].band = rank*s.tiers + t
		}
	}
	u := s.bands()
	for _, ch := range s.subs {
		ch <- u
	}
	return true
}

// Stop stops the watches and waits for what passes their events on.
func (s *dcSource) Stop() {
	s.stop()
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

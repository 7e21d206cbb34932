package client

import (
	"cmp"
	"hash/fnv"
	"slices"
	"time"
)

// subsetOrder is the order in which the caller numbered caller takes
// instances for a subset of size: its subset is the first size, and while
// some of those are unhealthy it extends into the ones that follow.
//
// It is deterministic subsetting (Google's SRE book, chapter 20) laid out
// on a ring, as Finagle's deterministic aperture is: the instances are
// ordered by a hash of their address, the same in every process, and
// caller c's subset is the size instances from position c×size on, around
// the ring. Callers numbered 0, 1, 2, … thus lay their subsets end to end,
// lap after lap: every instance is in the subsets of as many callers as
// any other, give or take one, whatever the number of callers. An instance
// that joins or leaves shifts the positions after it by one, and the
// starts of the callers past the first lap by one per lap: a subset
// changes by an instance or two (the SRE book's reshuffle per round
// changes most of them whenever the number of rounds does). With size 0
// or at least len(instances), it is every instance.
func subsetOrder(instances []string, size int, caller uint64) []string {
	type keyed struct {
		hash uint64
		inst string
	}
	ring := make([]keyed, len(instances))
	for i, inst := range instances {
		ring[i] = keyed{ringHash(inst), inst}
	}
	slices.SortFunc(ring, func(a, b keyed) int {
		return cmp.Or(cmp.Compare(a.hash, b.hash), cmp.Compare(a.inst, b.inst))
	})
	n := uint64(len(ring))
	start := 0
	if size > 0 && n > 0 && uint64(size) < n {
		start = int(caller % n * (uint64(size) % n) % n)
	}
	order := make([]string, 0, len(ring))
	for i := range ring {
		order = append(order, ring[(start+i)%len(ring)].inst)
	}
	return order
}

// ringHash places an instance on the ring: FNV-1a of its address, mixed
// (SplitMix64's finalizer) so that neighbouring addresses scatter.
func ringHash(inst string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(inst))
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// subsetStep is how often a caller's subset may swap one of its members
// for one of the subset subsetOrder gives it now: after instances joined
// or left, the subsets converge on the even spread one instance at a
// time, so that a rolling deploy of the fleet does not make every caller
// reconnect at once.
const subsetStep = time.Second

// subsetter is an Endpointer's subset (EndpointerConfig.Subset): the order in which it
// takes the instances discovery lists, the members it took last, and the
// pace at which they converge on its window. Its Endpointer's lock guards
// it, as the members it picks are the ones the Endpointer connects to in
// the same update.
type subsetter struct {
	subsetting
	ring      []string    // the order in which this caller takes the instances (subsetOrder)
	listed    []string    // the ring's instances, sorted
	members   []string    // those it took last, sorted
	lastSwap  time.Time   // when it last swapped a member for its window's
	swapTimer *time.Timer // picks again, while the subset converges
	stopped   bool
}

// update takes the instances discovery lists now, sorted, and returns the
// members, picked with what nodes know of their health; again, called a
// step later while the subset converges, must clear swapTimer and pick
// again, under the Endpointer's lock.
func (s *subsetter) update(instances []string, nodes map[string]*Node, again func()) []string {
	s.ring = subsetOrder(instances, s.size, s.caller)
	s.listed = slices.Clone(instances) // the event's slice is the instancer's
	s.members = s.take(nodes, again)
	return s.members
}

// again picks the subset again, after the health of its members changed,
// and says whether it changed.
func (s *subsetter) again(nodes map[string]*Node, resubset func()) ([]string, bool) {
	members := s.take(nodes, resubset)
	if slices.Equal(members, s.members) {
		return nil, false
	}
	s.members = members
	return members, true
}

// isListed reports whether discovery lists inst.
func (s *subsetter) isListed(inst string) bool {
	_, ok := slices.BinarySearch(s.listed, inst)
	return ok
}

// pick is the subset of the instances to connect to, in instance order.
// The members of the last pick that discovery still lists stay: those of
// the window (the first size of the ring) all, the others while the
// subset needs them (it is short of size, or of minHealthy healthy
// members); one of those others is let go for a window member at most
// every subsetStep, and only once the member swapped in last has connected
// (or failed to). Then, while the subset is short, it takes the instances
// of the ring in order, the window first. Healthy is reachable: an
// instance not yet connected counts, an ejected one too, one whose
// connection failed since it was last READY does not, even while it tries
// again. It changes nothing: swapped says it let a member go for a window
// member (take notes when), converging that the subset is not yet on its
// window.
func (s *subsetter) pick(nodes map[string]*Node) (members []string, swapped, converging bool) {
	size, enough := s.size, s.minHealthy()
	window := make(map[string]bool, size)
	for _, inst := range s.ring[:min(size, len(s.ring))] {
		window[inst] = true
	}
	var (
		in                = make(map[string]bool, size+4)
		healthy, inWindow int
	)
	add := func(inst string) {
		in[inst] = true
		members = append(members, inst)
		if window[inst] {
			inWindow++
		}
		if n, known := nodes[inst]; !known || reachable(n) {
			healthy++
		}
	}
	for _, inst := range s.members {
		if window[inst] && s.isListed(inst) {
			add(inst)
		}
	}
	short := func() bool { return len(members) < size || healthy < enough }
	swap := time.Since(s.lastSwap) >= subsetStep
	for _, inst := range s.members {
		if n, known := nodes[inst]; known && !n.wasReady.Load() && !n.failing.Load() {
			swap = false // make before break: not while a new member connects
		}
	}
	for _, inst := range s.members {
		if window[inst] || !short() || !s.isListed(inst) {
			continue // gone, kept above, or not needed any more
		}
		if swap && inWindow < len(window) {
			swap, swapped = false, true
			continue // for a window member, below
		}
		add(inst)
	}
	for _, inst := range s.ring {
		if !short() {
			break
		}
		if !in[inst] {
			add(inst)
		}
	}
	slices.Sort(members)
	return members, swapped, inWindow < len(window)
}

// take picks the subset (pick) and makes it so: it notes when a member
// was swapped, and a subset not yet on its window has again called after
// a step.
func (s *subsetter) take(nodes map[string]*Node, again func()) []string {
	members, swapped, converging := s.pick(nodes)
	if swapped {
		s.lastSwap = time.Now()
	}
	if converging && s.swapTimer == nil && !s.stopped {
		s.swapTimer = time.AfterFunc(subsetStep, again) // which clears swapTimer
	}
	return members
}

// stop stops the subset's timer; it picks no more.
func (s *subsetter) stop() {
	s.stopped = true
	if s.swapTimer != nil {
		s.swapTimer.Stop()
		s.swapTimer = nil
	}
	s.ring, s.listed, s.members = nil, nil, nil
}

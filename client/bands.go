package client

import (
	"math/rand/v2"
	"slices"
	"time"

	"github.com/go-kit/log/level"
)

// Datacenters (and, within each, locality tiers) as priority bands,
// Envoy's priority levels: Config.Datacenters lists them in order, the
// first is band 0. A banded source (dcsource.go) watches each and sends
// their states; the one Endpointer keeps every band's instances, and its
// snapshot holds them by band. A first attempt draws its band by the
// bands' loads (bandLoads); a retry stays in the band of its last attempt,
// or moves on to the next once two of that band's instances have failed
// the call.

// defaultOverprovisioning is Envoy's overprovisioning factor: a band takes
// all calls while 1/1.4 (71%) of its instances are healthy.
const defaultOverprovisioning = 1.4

// returnRamp is how long an instance that becomes healthy again in a band
// that was spilling calls over to the next takes to count fully towards
// its band's health: calls come back to it over returnRamp, not all at
// once (Envoy's slow start does the same for one host).
const returnRamp = 5 * time.Second

// rampStep is how often a snapshot is published again while an instance
// ramps, so that its band's load follows.
const rampStep = 250 * time.Millisecond

// bandLoads sets load[i] to band i's share of first attempts, given
// healthy[i], how many of its instances are healthy (a ramping one
// counting for a fraction), and total[i], how many it has, healthy or
// not, with Envoy's priority-load rule:
//
//	health(i) = min(1, over × healthy(i)/total(i))
//	load(0)   = health(0)
//	load(i)   = min(health(i), 1 − load(0) − … − load(i−1))
//
// so that band 0 takes every call while healthy(0)/total(0) ≥ 1/over, and
// the shortfall spills to band 1, then 2. When the healths add up to less
// than 1, each band gets its health over their sum: calls go where the
// healthy instances are. With no healthy instance anywhere, band 0 gets
// every call.
func bandLoads(healthy []float64, total []int, over float64, load []float64) {
	sum, left := 0.0, 1.0
	for i := range load {
		h := bandHealth(healthy[i], total[i], over)
		sum += h
		load[i] = min(h, left)
		left -= load[i]
	}
	switch {
	case sum == 0:
		clear(load)
		load[0] = 1
	case sum < 1:
		for i := range load {
			load[i] = bandHealth(healthy[i], total[i], over) / sum
		}
	}
}

// bandHealth is min(1, over × healthy/total), 0 for an empty band.
func bandHealth(healthy float64, total int, over float64) float64 {
	if total <= 0 {
		return 0
	}
	return min(1, over*healthy/float64(total))
}

// bandSnap is one band of a snapshot: its instances by tier.
type bandSnap struct {
	tiers [tiers][]*Node
}

// bandsSnap is the banded part of a snapshot, nil with one band.
type bandsSnap struct {
	bands []bandSnap
	// upTo[i] is the sum of the loads of bands 0 to i: a first attempt
	// goes to the first band whose upTo exceeds a draw in [0, 1).
	upTo []float64
	// For the page: each band's load, healthy instances (a ramping one in
	// part) and instances, healthy or not.
	load, healthy []float64
	total         []int
}

// usableTiers are the tiers a pick takes from in one band before it
// moves on to the next: a failing or ejected instance of the local band
// is worse than a healthy one of the next.
const usableTiers = tierHeld + 1

// pick returns an instance for an attempt of a call that tried tried:
// a first attempt in the band a draw by load gives, a retry in the band of
// its last attempt, or the next one once two instances of that band have
// failed the call; there, then in each band after it (and then those
// before), the best usable tier with an instance the call has not tried;
// then the failing and ejected ones in the same order; then, every
// instance tried, round again. pickIn picks from a non-empty tier.
func (b *bandsSnap) pick(tried []*Node, pickIn func(tier, tried []*Node) *Node) *Node {
	start := 0
	if len(tried) > 0 {
		// The band of the last attempt, unless two of its instances
		// have failed the call already: the band is likely failing as a
		// whole (its instances killed at once), and the next attempt
		// is better spent on the next.
		start = int(tried[len(tried)-1].band.Load())
		if countNodes(tried, func(n *Node) bool { return int(n.band.Load()) == start }) >= 2 {
			start = (start + 1) % len(b.bands)
		}
	} else if r := rand.Float64(); len(b.upTo) > 1 {
		for start < len(b.upTo)-1 && r >= b.upTo[start] {
			start++
		}
	}
	if start >= len(b.bands) {
		start = 0
	}
	for _, t := range []struct {
		from, to int
		tried    []*Node
	}{{0, usableTiers, tried}, {usableTiers, tiers, tried}, {0, tiers, nil}} {
		for i := range b.bands {
			band := &b.bands[(start+i)%len(b.bands)]
			for _, tier := range band.tiers[t.from:t.to] {
				if len(tier) > 0 {
					if n := pickIn(tier, t.tried); n != nil {
						return n
					}
				}
			}
		}
	}
	return nil
}

// maxBands bounds Config.Datacenters.
const maxBands = 16

// banding is an Endpointer's bands, guarded by its lock: what each band
// lists, how many instances each has, and, from the last snapshot, how
// healthy each was.
type banding struct {
	over       float64  // the overprovisioning factor
	names      []string // of the datacenters, in order
	listed     [][]string
	registered []int          // -1: unknown
	bandOf     map[string]int // each listed instance's band
	health     []float64      // min(1, over × healthy/total), at the last snapshot
	started    bool           // the source's first states are applied
	timer      *time.Timer    // publishes again while an instance ramps
	ramping    bool
	ramp       time.Duration // returnRamp; shorter in tests

	// The instances that counted as healthy at the last snapshot, and
	// since when those that ramp back do.
	wasHealthy map[*Node]bool
	rampFrom   map[*Node]time.Time

	// Of the snapshot being built.
	now            time.Time
	healthy, count []float64
	nowHealthy     map[*Node]bool
	nowRamping     map[*Node]time.Time
}

func (b *banding) init(n int) {
	b.listed = make([][]string, n)
	b.registered = make([]int, n)
	for i := range b.registered {
		b.registered[i] = -1
	}
	b.health = make([]float64, n)
	b.healthy = make([]float64, n)
	b.count = make([]float64, n)
	b.bandOf = map[string]int{}
	b.ramp = returnRamp
}

// merge returns every band's instances, sorted, each once, and notes the
// band of each: the first that lists it.
func (b *banding) merge() []string {
	clear(b.bandOf)
	var all []string
	for band, l := range b.listed {
		for _, inst := range l {
			if _, ok := b.bandOf[inst]; !ok {
				b.bandOf[inst] = band
				all = append(all, inst)
			}
		}
	}
	slices.Sort(all)
	return all
}

// start begins the bands of a snapshot.
func (b *banding) start() *bandsSnap {
	n := len(b.listed)
	clear(b.healthy)
	clear(b.count)
	b.now, b.ramping = time.Now(), false
	b.nowHealthy, b.nowRamping = make(map[*Node]bool, len(b.wasHealthy)), map[*Node]time.Time{}
	return &bandsSnap{bands: make([]bandSnap, n), upTo: make([]float64, n), load: make([]float64, n)}
}

// add puts n, of tier t, in its band of bs, and counts it towards its
// band's health: an instance healthy counts, fully unless it ramps
// (it became healthy while its band spilled calls over to others that
// served them, within returnRamp; not among the first instances the
// client learns of).
func (b *banding) add(bs *bandsSnap, n *Node, t int) {
	band := int(n.band.Load())
	bs.bands[band].tiers[t] = append(bs.bands[band].tiers[t], n)
	b.count[band]++
	// Healthy: ready or held, or connecting for the first time (no
	// failure seen: a new instance is dialled on its first call).
	if t != tierReady && t != tierHeld && (t != tierConnecting || n.wasReady.Load()) {
		return
	}
	b.nowHealthy[n] = true
	from, ramps := b.rampFrom[n]
	if !b.wasHealthy[n] && b.started && b.health[band] < 1 {
		from, ramps = b.now, true
	}
	w := 1.0
	if ramps {
		if w = float64(b.now.Sub(from)) / float64(b.ramp); w < 1 {
			b.nowRamping[n], b.ramping = from, true
		} else {
			w = 1
		}
	}
	b.healthy[band] += w
}

// finish works out the bands' loads, and, while an instance ramps, asks
// for another snapshot (again) in a rampStep.
func (b *banding) finish(bs *bandsSnap, again func()) *bandsSnap {
	total := make([]int, len(b.listed))
	for i := range total {
		total[i] = max(b.registered[i], int(b.count[i]))
		b.health[i] = bandHealth(b.healthy[i], total[i], b.over)
	}
	b.wasHealthy, b.rampFrom = b.nowHealthy, b.nowRamping
	bandLoads(b.healthy, total, b.over, bs.load)
	bs.healthy, bs.total = slices.Clone(b.healthy), total
	sum := 0.0
	for i, l := range bs.load {
		sum += l
		bs.upTo[i] = sum
	}
	if b.ramping && b.timer == nil {
		b.timer = time.AfterFunc(rampStep, again)
	}
	return bs
}

func (b *banding) stop() {
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
}

// handleBand applies an update of a banded source: the new states of
// some of its bands, together.
func (e *Endpointer) handleBand(u bandUpdate) {
	for _, st := range u {
		if st.err != nil {
			_ = level.Warn(e.logger).Log("msg", "discovery failed in one datacenter; keeping its instances known last", "datacenter", st.name, "instances", len(st.instances), "err", st.err)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	b := &e.bands
	for _, st := range u {
		if st.band < 0 || st.band >= len(b.listed) {
			continue
		}
		if st.name != "" && st.name != b.names[st.band] {
			// Another datacenter in this band now (a nearer one first): its
			// fail-static peak starts again.
			b.names[st.band] = st.name
			if st.band < len(e.held.peak) {
				e.held.peak[st.band] = peakListed{}
			}
		}
		b.registered[st.band] = st.registered
		if st.err == nil || b.listed[st.band] == nil {
			b.listed[st.band] = st.instances
		}
	}
	e.apply(b.merge()) // each listed instance in its band
}

// rampAgain publishes a snapshot again, for an instance that ramps.
func (e *Endpointer) rampAgain() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.bands.timer = nil
	if !e.closed {
		e.publish()
	}
}

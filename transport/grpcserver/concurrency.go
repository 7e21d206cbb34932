package grpcserver

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// ConcurrencyLimit decides how many calls a server runs at once; calls
// over it are shed (ResourceExhausted at once, before their request is
// read). Limits.Concurrency takes one. A server never runs more than
// Limits.MaxCallsInFlight, whatever the limit says.
type ConcurrencyLimit interface {
	// Limit is how many calls may be in flight now: at least 1.
	Limit() int
	// Observe reports a call that ran to its end while its caller waited
	// (not one the caller gave up on): how long it took, from its
	// admission, and how many calls were in flight when it was admitted,
	// itself included. It is called concurrently, once per such call.
	Observe(latency time.Duration, inflight int)
}

// FixedLimit is a ConcurrencyLimit that does not move: n calls (at least
// 1). For a service whose capacity is known and does not change.
func FixedLimit(n int) ConcurrencyLimit { return fixedLimit(max(n, 1)) }

// NoConcurrencyLimit is a ConcurrencyLimit that never sheds: only
// Limits.MaxCallsInFlight bounds the calls in flight, as it bounds memory.
// Calls past the service's capacity then queue in it.
func NoConcurrencyLimit() ConcurrencyLimit { return fixedLimit(math.MaxInt) }

type fixedLimit int

func (f fixedLimit) Limit() int               { return int(f) }
func (fixedLimit) Observe(time.Duration, int) {}
func (f fixedLimit) String() string {
	if f == math.MaxInt {
		return "no concurrency limit"
	}
	return "fixed concurrency limit"
}

// AdaptiveConfig tunes an AdaptiveLimit. The zero value of each field
// means its default (DefaultAdaptive's); see there for why each is what it
// is.
type AdaptiveConfig struct {
	// Min and Max bound the limit; Initial is where it starts.
	Min, Max, Initial int
	// Tolerance is how much slower than the no-load latency calls may be
	// before the limit comes down: 0.25 means a quarter slower. It
	// absorbs the service's own latency noise; it is also the queue the
	// limit keeps standing, as a share of the calls that run at once.
	Tolerance float64
	// MinTolerance is the least it tolerates, as time: a quarter of a
	// fast service's latency (100µs) is less than the noise of the
	// scheduler and the collector, and a queue of a millisecond costs no
	// caller anything.
	MinTolerance time.Duration
	// Window is how long latencies are averaged over before the limit
	// moves (it also waits for at least 10 calls). Calls over the limit
	// raise it at most twice over per Window.
	Window time.Duration
	// ProbeInterval is how often, at most, the no-load latency is measured
	// again when the server has not seen it for that long: the limit
	// halves, for a Window or a few, so that whatever queue stands drains.
	// It is also how long a service that queued has its limit grow by
	// its latency alone, not by the calls over it.
	ProbeInterval time.Duration
}

// DefaultAdaptive is the AdaptiveLimit a server gets unless told
// otherwise.
var DefaultAdaptive = AdaptiveConfig{
	// Envoy's adaptive concurrency filter keeps at least 3: enough to
	// measure latency and to serve while the limit probes.
	Min: 4,
	// Limits.MaxCallsInFlight's default: past it the server refuses
	// calls anyway, to bound memory.
	Max: 128,
	// Netflix's concurrency-limits start at 20: a server admits a burst
	// while it learns, and the first Window corrects it. Calls over it
	// raise it until then (a slow service's first Window ends a latency
	// after its first call), so it is no ceiling on a service that runs
	// more.
	Initial: 20,
	// Envoy's default buffer (25%): latency noise of a real service rarely
	// moves a Window's mean by more.
	Tolerance: 0.25,
	// A busy Go process delays goroutines by tens to hundreds of
	// microseconds; a millisecond is well above that and far below any
	// caller's deadline.
	MinTolerance: time.Millisecond,
	// Enough calls to average at a few hundred calls a second, short
	// enough to react to a surge within a few Windows.
	Window: 100 * time.Millisecond,
	// A Window at half the limit every 10s costs at most 1/200 of the
	// throughput, and a service whose latency changed for good (a slower
	// dependency) has its limit right again within 10s.
	ProbeInterval: 10 * time.Second,
}

// minSamples is the fewest calls a Window averages.
const minSamples = 10

// Validate returns every field out of range, joined.
func (c AdaptiveConfig) Validate() error {
	var errs []error
	if c.Min < 0 || c.Max < 0 || c.Initial < 0 {
		errs = append(errs, fmt.Errorf("AdaptiveConfig Min %d, Max %d, Initial %d: must not be negative (0 means the default)", c.Min, c.Max, c.Initial))
	}
	if d := c.withDefaults(); d.Min > d.Max {
		errs = append(errs, fmt.Errorf("AdaptiveConfig.Min %d is above Max %d", d.Min, d.Max))
	}
	if c.Tolerance < 0 || math.IsNaN(c.Tolerance) || c.Tolerance > 10 {
		errs = append(errs, fmt.Errorf("AdaptiveConfig.Tolerance %v: must be within [0, 10] (0 means the default)", c.Tolerance))
	}
	if c.Window < 0 || c.ProbeInterval < 0 || c.MinTolerance < 0 {
		errs = append(errs, fmt.Errorf("AdaptiveConfig Window %v, ProbeInterval %v, MinTolerance %v: must not be negative (0 means the default)", c.Window, c.ProbeInterval, c.MinTolerance))
	}
	if d := c.withDefaults(); d.ProbeInterval < 10*d.Window {
		errs = append(errs, fmt.Errorf("AdaptiveConfig.ProbeInterval %v: must be at least 10 Windows (%v)", d.ProbeInterval, 10*d.Window))
	}
	return errors.Join(errs...)
}

func (c AdaptiveConfig) withDefaults() AdaptiveConfig {
	d := DefaultAdaptive
	c.Min = cmp.Or(c.Min, d.Min)
	c.Max = cmp.Or(c.Max, d.Max)
	c.Initial = min(max(cmp.Or(c.Initial, d.Initial), c.Min), c.Max)
	c.Tolerance = cmp.Or(c.Tolerance, d.Tolerance)
	c.MinTolerance = cmp.Or(c.MinTolerance, d.MinTolerance)
	c.Window = cmp.Or(c.Window, d.Window)
	c.ProbeInterval = cmp.Or(c.ProbeInterval, d.ProbeInterval)
	return c
}

// AdaptiveLimit is a ConcurrencyLimit that follows the service's capacity
// by its latency: the gradient of Envoy's adaptive concurrency filter and
// Netflix's Gradient limit. Each Window it compares the mean latency of
// the calls that ended with the service's no-load latency, and sets
//
//	limit = limit × min(2, (noLoad + tolerance) / mean)
//
// (halving at most per Window), where tolerance is noLoad × Tolerance, at
// least MinTolerance: calls queueing inside the service raise
// their latency, and the limit falls to what the service runs without a
// queue; latency at its no-load value lets the limit rise, but only while
// the calls in flight use at least half of it, so that a quiet server does
// not grow a limit it has never tried. A service whose bottleneck serves C
// calls at once settles at about C × (1 + Tolerance) (for a service slower
// than MinTolerance / Tolerance, 4ms by default).
//
// The limit also learns of the calls it is about to shed, which ended
// calls cannot tell it in time: a call ends a latency after its admission
// (300ms for a service that waits 300ms on a database), and until then
// nothing says the limit is full, while every call over it is shed and,
// when the service's other instances are as full, fails. So a call over
// the limit raises it by one and is admitted, up to twice what the limit
// was a Window before (and Max), while nothing says the service queues:
// the last Window's latency was within the tolerance of the no-load
// latency and did not rise with the calls in flight (by the least-squares
// slope of latency over the calls in flight at admission, less its noise),
// and no Window past the tolerance came in the last ProbeInterval; before
// the first Window, while the calls that have ended took no longer for
// more in flight, or none has ended yet. The limit of a service whose
// latency does not rise with its calls in flight (one that waits on IO)
// thus follows its demand as it rises (up to twofold a Window) and sheds
// none of it; a service that has queued has shown that its own capacity
// bounds it, and its limit grows by latency alone, as above; the first
// calls to end of a server started under a surge show their queue, and
// stop the growth.
//
// The no-load latency is the lowest Window mean seen. Under a surge that
// keeps the limit full, every call waits a little, and no Window shows the
// no-load latency any more; a limit that trusted an old one would never
// notice a service that became slower for good, and one that took the
// recent latencies would drift up with its own queue. So, as BBR's
// ProbeRTT does, once ProbeInterval has passed (with 25% jitter) without a
// Window near the no-load latency, the limit halves, Window after Window
// while that lowers the latency, the queue drains, and the lowest mean of
// the probe is the no-load latency from then on. An IO-bound service
// whose latency is steady keeps Windows near its no-load latency and is
// not probed; one whose latency is noisy may be, and its limit then
// halves for a Window, but as it stands at twice its calls in flight or
// more (it rises while they use half of it), that sheds little.
//
// Why latency and not Little's law over CPU (go-zero, kratos' BBR): those
// shed only when the machine's CPU is busy, and a service's bottleneck is
// often elsewhere (a pool, a lock, a dependency); a limit of the largest
// throughput times the least latency also grows without bound under a
// standing queue.
type AdaptiveLimit struct {
	cfg   AdaptiveConfig
	now   func() time.Time
	limit atomic.Int64
	// follow is whether a call over the limit raises it (admitOver):
	// nothing says the service queues.
	follow atomic.Bool

	mu          sync.Mutex
	start       time.Time // of the current Window
	sum         time.Duration
	n           int
	maxInflight int
	minInflight int
	// Sums over the Window's calls of x, their calls in flight at
	// admission, y, their latency in seconds, and x², y², xy: how latency
	// rises with the calls in flight (a least-squares slope).
	sx, sy, sxx, syy, sxy float64

	noLoad      time.Duration // the no-load latency; 0 until the first Window
	seen        time.Time     // when a Window last showed the no-load latency
	queued      time.Time     // when a Window last showed latency past the tolerance
	probeAfter  time.Duration // ProbeInterval with jitter, drawn per probe
	probing     bool
	beforeProbe int64         // the limit to go back to after a probe
	probeMean   time.Duration // the mean of the probe's last Window
	// Calls over the limit raise it to at most twice base, the limit at
	// baseAt, which moves on a Window at a time.
	base   int64
	baseAt time.Time
}

// NewAdaptiveLimit returns an AdaptiveLimit tuned by cfg.
func NewAdaptiveLimit(cfg AdaptiveConfig) (*AdaptiveLimit, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return newAdaptiveLimit(cfg.withDefaults(), time.Now), nil
}

func newAdaptiveLimit(cfg AdaptiveConfig, now func() time.Time) *AdaptiveLimit {
	a := &AdaptiveLimit{cfg: cfg, now: now, start: now()}
	a.limit.Store(int64(cfg.Initial))
	a.follow.Store(true) // nothing measured: nothing says calls queue
	// The first probe comes sooner: a server that starts under a surge
	// learns a no-load latency with a queue in it.
	a.probeAfter = a.jittered() / 10
	return a
}

func (a *AdaptiveLimit) jittered() time.Duration {
	p := a.cfg.ProbeInterval
	return p - p/4 + rand.N(p/2+1)
}

// Limit implements ConcurrencyLimit.
func (a *AdaptiveLimit) Limit() int { return int(a.limit.Load()) }

// String says what the limit is.
func (a *AdaptiveLimit) String() string { return "adaptive concurrency limit" }

// Observe implements ConcurrencyLimit.
func (a *AdaptiveLimit) Observe(latency time.Duration, inflight int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sum += latency
	a.n++
	if a.n == 1 {
		a.minInflight = inflight
	}
	a.maxInflight = max(a.maxInflight, inflight)
	a.minInflight = min(a.minInflight, inflight)
	x, y := float64(inflight), latency.Seconds()
	a.sx, a.sy, a.sxx, a.syy, a.sxy = a.sx+x, a.sy+y, a.sxx+x*x, a.syy+y*y, a.sxy+x*y
	if a.noLoad == 0 {
		// Before the first Window, calls over the limit raise it while
		// the calls that have ended took no longer for more in flight.
		a.follow.Store(a.rise() <= a.tolerance(a.sum/time.Duration(a.n))/2)
	}
	if now := a.now(); a.n >= minSamples && now.Sub(a.start) >= a.cfg.Window {
		a.update(now)
	}
}

// admitOver is told of a call over the limit, before admission sheds
// it. While the limit follows the demand (see AdaptiveLimit), it rises by
// one, at most to twice what it was a Window ago and to Max, and
// admitOver reports true: the call is admitted.
func (a *AdaptiveLimit) admitOver() bool {
	if !a.follow.Load() {
		return false // the common case under overload: no lock
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.follow.Load() {
		return false
	}
	limit := a.limit.Load()
	if now := a.now(); now.Sub(a.baseAt) >= a.cfg.Window {
		a.base, a.baseAt = limit, now
	}
	if limit >= min(2*a.base, int64(a.cfg.Max)) {
		return false
	}
	a.limit.Store(limit + 1)
	return true
}

// update ends a Window at now and moves the limit. a.mu is held.
func (a *AdaptiveLimit) update(now time.Time) {
	mean := a.sum / time.Duration(a.n)
	used := a.maxInflight
	rise := a.rise()
	a.start, a.sum, a.n, a.maxInflight = now, 0, 0, 0
	a.sx, a.sy, a.sxx, a.syy, a.sxy = 0, 0, 0, 0, 0
	limit := a.limit.Load()
	defer func() {
		// Calls over the limit raise it while the latency is within the
		// tolerance and did not rise with the calls in flight (the
		// first Windows of a server started under a surge know no other
		// latency than their queue's), and the service has not queued
		// lately.
		flat := !a.probing && mean <= a.noLoad+a.tolerance(a.noLoad) && rise <= a.tolerance(a.noLoad)/2
		a.follow.Store(flat && (a.queued.IsZero() || now.Sub(a.queued) > a.cfg.ProbeInterval))
	}()
	switch {
	case a.probing:
		if a.probeMean-mean > a.tolerance(a.probeMean)/2 && limit > int64(a.cfg.Min) {
			// Halving helped: a queue stood, and may stand still.
			a.probeMean = mean
			a.queued = now
			a.limit.Store(max(int64(a.cfg.Min), limit/2))
			return
		}
		// The queue has drained: this is the no-load latency now, even
		// if it is higher than the last one (the service got slower).
		a.probing = false
		a.noLoad, a.seen = min(mean, a.probeMean), now
		a.probeAfter = a.jittered()
		a.limit.Store(a.beforeProbe)
		return
	case a.noLoad == 0 || mean < a.noLoad:
		a.noLoad = mean
	}
	if mean <= a.noLoad+a.tolerance(a.noLoad)/2 {
		a.seen = now
	}
	if now.Sub(a.seen) > a.probeAfter {
		a.probing = true
		a.beforeProbe, a.probeMean = limit, mean
		a.limit.Store(max(int64(a.cfg.Min), limit/2))
		return
	}
	gradient := min(2, float64(a.noLoad+a.tolerance(a.noLoad))/float64(mean))
	next := float64(limit) * max(gradient, 0.5)
	if gradient >= 1 {
		if 2*int64(used) < limit {
			return // the limit is not what holds calls back: leave it
		}
		next = max(next, float64(limit+1))
	} else {
		a.queued = now
	}
	a.limit.Store(min(max(int64(next), int64(a.cfg.Min)), int64(a.cfg.Max)))
}

// rise is how much longer the Window's calls took, from the fewest calls
// in flight at their admission to the most, by the least-squares line
// through them, less twice its standard error (the latency's own noise
// makes a slope of a few calls): 0 when calls do not queue in the
// service. a.mu is held.
func (a *AdaptiveLimit) rise() time.Duration {
	n := float64(a.n)
	sxx := a.sxx - a.sx*a.sx/n
	if n < 3 || sxx <= 0 {
		return 0 // all admitted at the same count
	}
	sxy := a.sxy - a.sx*a.sy/n
	slope := sxy / sxx // seconds a call
	residual := max(a.syy-a.sy*a.sy/n-slope*sxy, 0)
	low := slope - 2*math.Sqrt(residual/(n-2)/sxx)
	return time.Duration(max(low, 0) * float64(a.maxInflight-a.minInflight) * float64(time.Second))
}

// tolerance is how much longer than latency calls may take before the
// limit comes down.
func (a *AdaptiveLimit) tolerance(latency time.Duration) time.Duration {
	return max(time.Duration(float64(latency)*a.cfg.Tolerance), a.cfg.MinTolerance)
}

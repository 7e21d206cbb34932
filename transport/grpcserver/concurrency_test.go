package grpcserver

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// queue is a service whose bottleneck runs c calls at once, each in
// service: with n calls in flight, each waits n/c services.
type queue struct {
	c       int
	service time.Duration
}

func (q queue) latency(inflight int) time.Duration {
	if inflight <= q.c {
		return q.service
	}
	return time.Duration(float64(q.service) * float64(inflight) / float64(q.c))
}

// fakeClock is a clock the test moves.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

// drive runs windows of calls through a: each window, a full limit of
// calls (or offered, when fewer) in flight on q, and returns the limits
// after each window.
func drive(a *AdaptiveLimit, clock *fakeClock, q queue, offered, windows int) []int {
	var limits []int
	for range windows {
		inflight := min(a.Limit(), offered)
		for range 20 {
			a.Observe(q.latency(inflight), inflight)
			clock.advance(a.cfg.Window / 20)
		}
		a.Observe(q.latency(inflight), inflight)
		limits = append(limits, a.Limit())
	}
	return limits
}

// outOfProbe drives a on until a probe in progress, which halves the
// limit for a few windows, is over (for at most 50 windows), and returns
// the limits it went through.
func outOfProbe(a *AdaptiveLimit, clock *fakeClock, q queue, offered int) []int {
	var limits []int
	for i := 0; a.probing && i < 50; i++ {
		limits = append(limits, drive(a, clock, q, offered, 1)...)
	}
	return limits
}

func newTestLimit(cfg AdaptiveConfig) (*AdaptiveLimit, *fakeClock) {
	clock := &fakeClock{t: time.Unix(0, 0)}
	return newAdaptiveLimit(cfg.withDefaults(), clock.now), clock
}

func TestAdaptiveLimitFallsUnderQueueingToTheCapacity(t *testing.T) {
	// Starts at 20 over a bottleneck of 8: calls queue, the limit falls.
	a, clock := newTestLimit(AdaptiveConfig{})
	q := queue{c: 8, service: 10 * time.Millisecond}
	drive(a, clock, q, 1000, 1) // the first window: the no-load latency is the mean it saw
	a.noLoad = q.service        // as a quiet start would have measured it
	limits := drive(a, clock, q, 1000, 30)
	last := limits[len(limits)-1]
	// The limit settles at about c × (1 + Tolerance) = 10: calls queue a
	// quarter of a service, not the 20 they started with.
	if last < 8 || last > 11 {
		t.Errorf("limit after 30 windows of overload = %d (history %v), want 8..11 (bottleneck 8, tolerance 25%%)", last, limits)
	}
}

func TestAdaptiveLimitRisesWithHeadroom(t *testing.T) {
	// A bottleneck of 60 and a start at 20: latency stays at its no-load
	// value while the limit is full, so the limit rises to the capacity.
	a, clock := newTestLimit(AdaptiveConfig{})
	q := queue{c: 60, service: 10 * time.Millisecond}
	limits := drive(a, clock, q, 1000, 30)
	last := limits[len(limits)-1]
	if last < 60 || last > 76 {
		t.Errorf("limit = %d (history %v), want 60..76 (bottleneck 60)", last, limits)
	}
	for i := 1; i < len(limits) && limits[i-1] < 60; i++ {
		if limits[i] <= limits[i-1] {
			t.Fatalf("limit did not rise while below the capacity: %v", limits)
		}
	}
}

func TestAdaptiveLimitHoldsWhenNotUsed(t *testing.T) {
	// Five calls in flight of a limit of 20, no queueing: a limit it has
	// never tried is not grown.
	a, clock := newTestLimit(AdaptiveConfig{})
	limits := drive(a, clock, queue{c: 1000, service: time.Millisecond}, 5, 50)
	if last := limits[len(limits)-1]; last != 20 {
		t.Errorf("limit with 5 of 20 in use = %d (history %v), want 20 still", last, limits)
	}
}

func TestAdaptiveLimitIsBounded(t *testing.T) {
	a, clock := newTestLimit(AdaptiveConfig{Min: 3, Max: 40})
	if limits := drive(a, clock, queue{c: 10000, service: time.Millisecond}, 100000, 100); limits[len(limits)-1] != 40 {
		t.Errorf("limit with endless headroom = %v, want Max 40 at the end", limits)
	}
	// A bottleneck of one call at a time under endless load: at least Min
	// stays, and the limit stays near it.
	a, clock = newTestLimit(AdaptiveConfig{Min: 3, Max: 40})
	limits := drive(a, clock, queue{c: 1, service: time.Millisecond}, 100000, 300)
	for _, l := range limits {
		if l < 3 || l > 40 {
			t.Fatalf("limit %d outside [3, 40]: %v", l, limits)
		}
	}
	if l := limits[len(limits)-1]; l > 5 {
		t.Errorf("limit over a bottleneck of 1 = %d (history %v), want near Min 3", l, limits)
	}
}

func TestAdaptiveLimitProbesTheNoLoadLatencyAgain(t *testing.T) {
	// The service becomes twice as slow for good. The limit first falls
	// (it takes the slowness for a queue), then a probe measures the new
	// no-load latency and the limit comes back to the capacity.
	a, clock := newTestLimit(AdaptiveConfig{})
	drive(a, clock, queue{c: 40, service: 10 * time.Millisecond}, 1000, 20)
	slow := queue{c: 40, service: 20 * time.Millisecond}
	limits := drive(a, clock, slow, 1000, 5)
	if limits[len(limits)-1] >= 40 {
		t.Fatalf("limit right after the slowdown = %v, want it below 40 at first", limits)
	}
	// Past ProbeInterval (at most 12.5s with jitter) and a few windows,
	// and out of any later probe (which halves the limit for a while).
	limits = append(drive(a, clock, slow, 1000, 200), outOfProbe(a, clock, slow, 1000)...)
	if last := limits[len(limits)-1]; last < 40 || last > 52 {
		t.Errorf("limit 20s after the slowdown = %d (history %v), want 40..52 again", last, limits)
	}
	if a.noLoad != slow.service {
		t.Errorf("no-load latency after the probe = %v, want %v", a.noLoad, slow.service)
	}
}

func TestAdaptiveLimitStandingQueueIsDrainedByProbes(t *testing.T) {
	// Under a surge that never ends, the no-load latency stays what it was
	// and the limit stays near the capacity, not drifting up with its
	// own queue.
	a, clock := newTestLimit(AdaptiveConfig{})
	q := queue{c: 16, service: 10 * time.Millisecond}
	drive(a, clock, q, 10, 3) // quiet: the no-load latency is seen
	limits := drive(a, clock, q, 100000, 1000)
	for _, l := range limits[len(limits)/2:] {
		if l > 21 {
			t.Fatalf("limit drifted to %d under a standing queue (bottleneck 16): %v", l, limits[len(limits)/2:])
		}
	}
	if a.noLoad != q.service {
		t.Errorf("no-load latency after 100s of surge = %v, want %v", a.noLoad, q.service)
	}
}

func TestAdaptiveLimitStartedUnderASurgeFindsTheCapacity(t *testing.T) {
	// The first windows see a queue (20 in flight, a bottleneck of 8) and
	// take its latency for the no-load one; early probes correct it.
	a, clock := newTestLimit(AdaptiveConfig{})
	q := queue{c: 8, service: 10 * time.Millisecond}
	limits := append(drive(a, clock, q, 100000, 300), outOfProbe(a, clock, q, 100000)...)
	if last := limits[len(limits)-1]; last < 8 || last > 11 {
		t.Errorf("limit 30s into a surge from the start = %d (history %v), want 8..11", last, limits)
	}
}

func TestAdaptiveLimitIgnoresAFastServicesNoise(t *testing.T) {
	// A 100µs service whose windows, from scheduling and GC, take 100µs
	// to 600µs, a few calls in flight: six times the no-load latency, but
	// half a millisecond, under MinTolerance. The limit does not fall.
	a, clock := newTestLimit(AdaptiveConfig{})
	for w := range 200 {
		latency := 100*time.Microsecond + time.Duration(w%6)*100*time.Microsecond
		for range 20 {
			a.Observe(latency, 3)
			clock.advance(a.cfg.Window / 20)
		}
		if a.Limit() < DefaultAdaptive.Initial/2 {
			t.Fatalf("window %d (mean %v): limit %d, want it to hold about %d", w, latency, a.Limit(), DefaultAdaptive.Initial)
		}
	}
	// Past MinTolerance it is queueing, and the limit falls (within 5
	// windows: later, a probe would find 5ms the new no-load latency).
	for range 5 {
		for range 20 {
			a.Observe(5*time.Millisecond, a.Limit())
			clock.advance(a.cfg.Window / 20)
		}
	}
	if a.Limit() != a.cfg.Min {
		t.Errorf("calls at 50x the no-load latency: limit %d, want Min %d", a.Limit(), a.cfg.Min)
	}
}

// admitOver does what a server's admission does with a call over a's
// limit before it sheds it: it asks a, which may grow to admit it.
func admitOver(a *AdaptiveLimit) bool {
	o, ok := any(a).(interface{ admitOver() bool })
	return ok && o.admitOver()
}

// admissionSim is a server's admission in front of a service, on a fake
// clock: open-loop calls, each admitted while the calls in flight are
// within a's limit (or when a grows to admit it, as admission asks), else
// shed; an admitted call ends latency(its in flight) later and a observes
// it.
type admissionSim struct {
	a       *AdaptiveLimit
	clock   *fakeClock
	latency func(inflight int) time.Duration
	rng     *rand.Rand
	calls   []simCall // in flight, by their end
	shed    []time.Duration
	limits  []int // the limit at each arrival
}

type simCall struct {
	end      time.Time
	latency  time.Duration
	inflight int
}

func newAdmissionSim(latency func(int) time.Duration) *admissionSim {
	a, clock := newTestLimit(AdaptiveConfig{})
	return &admissionSim{a: a, clock: clock, latency: latency, rng: rand.New(rand.NewPCG(28, 1))}
}

// run offers calls at rate a second for d, at random (a Poisson process,
// as many independent callers make), and returns when each call it shed
// arrived, from the start of the run.
func (s *admissionSim) run(rate float64, d time.Duration) []time.Duration {
	start := s.clock.t
	end := start.Add(d)
	s.shed = nil
	next := start.Add(time.Duration(s.rng.ExpFloat64() / rate * float64(time.Second)))
	for {
		for len(s.calls) > 0 && !s.calls[0].end.After(next) && s.calls[0].end.Before(end) {
			c := s.calls[0]
			s.calls = s.calls[1:]
			s.clock.t = c.end
			s.a.Observe(c.latency, c.inflight)
		}
		if !next.Before(end) {
			break
		}
		s.clock.t = next
		n := len(s.calls) + 1
		limit := s.a.Limit()
		if n > limit && admitOver(s.a) {
			limit = s.a.Limit()
		}
		s.limits = append(s.limits, limit)
		if n > limit {
			s.shed = append(s.shed, next.Sub(start))
		} else {
			lat := s.latency(n)
			c := simCall{end: next.Add(lat), latency: lat, inflight: n}
			i, _ := slices.BinarySearchFunc(s.calls, c, func(x, y simCall) int { return x.end.Compare(y.end) })
			s.calls = slices.Insert(s.calls, i, c)
		}
		next = next.Add(time.Duration(s.rng.ExpFloat64() / rate * float64(time.Second)))
	}
	s.clock.t = end
	return s.shed
}

// ioBound is a service whose calls wait 300ms on IO however many run at
// once, as in issue #28.
func ioBound(int) time.Duration { return 300 * time.Millisecond }

func TestAdaptiveLimitFollowsAnIOBoundServicesDemandFromTheStart(t *testing.T) {
	// Issue #28: three instances of a 300ms IO-bound service under 200
	// calls/s, about 20 in flight each, the limit's Initial: random
	// arrivals put more than 20 in flight at times, and no call has ended
	// to tell the limit anything for its first 300ms. Latency never
	// rises: no call may be shed, as every instance is as full as this
	// one and a caller's retries elsewhere are shed too.
	s := newAdmissionSim(ioBound)
	if shed := s.run(200.0/3, 4*time.Second); len(shed) > 0 {
		t.Errorf("%d calls shed at ~20 in flight from the start (at %v), limit %d then; want none", len(shed), shed[:min(len(shed), 5)], s.a.Limit())
	}
	// One instance leaves: the two others carry 30 each.
	if shed := s.run(100, 4*time.Second); len(shed) > 0 {
		t.Errorf("%d calls shed once the share rose to ~30 in flight (at %v), limit %d; want none", len(shed), shed[:min(len(shed), 5)], s.a.Limit())
	}
}

func TestAdaptiveLimitOfAQuietServerFollowsARise(t *testing.T) {
	// Quiet for 5s (5 calls in flight): the limit stays at its Initial
	// 20, never tried. Then the service's share rises to 30 in flight (a
	// peer left): calls end 300ms after admission, so for 300ms no
	// ended call says the limit is full; the calls over it must say so.
	s := newAdmissionSim(ioBound)
	if shed := s.run(5/0.3, 5*time.Second); len(shed) > 0 || s.a.Limit() != DefaultAdaptive.Initial {
		t.Fatalf("quiet: %d shed, limit %d; want none shed and the limit still %d", len(shed), s.a.Limit(), DefaultAdaptive.Initial)
	}
	from := len(s.limits)
	shed := s.run(100, 3*time.Second)
	if len(shed) > 0 {
		t.Errorf("%d calls shed after the rise to ~30 in flight (at %v); want none", len(shed), shed[:min(len(shed), 5)])
	}
	// The limit is at least 30 within 500ms (50 arrivals), and never
	// below 30 from then on.
	if low := slices.Min(s.limits[from+50:]); low < 30 {
		t.Errorf("limit from 500ms after the rise: as low as %d; want 30 or more (history %v)", low, s.limits[from:from+80])
	}
}

func TestAdaptiveLimitOfACPUBoundServiceStillFallsWhenItsCallsAreOver(t *testing.T) {
	// The same admission in front of a service that runs 8 calls at once
	// (10ms each; more queue), offered twice its capacity from its start:
	// the calls over the limit must not hold it above what the service
	// runs without a queue.
	q := queue{c: 8, service: 10 * time.Millisecond}
	s := newAdmissionSim(q.latency)
	s.run(1600, 3*time.Second) // the early probes find the no-load latency
	// Before a call has ended nothing says calls queue, and those over
	// the limit raise it; the first calls to end, taking longer for more
	// in flight, say they do.
	if high := slices.Max(s.limits); high > 2*DefaultAdaptive.Initial {
		t.Errorf("limit of a server started under a surge rose to %d; want at most %d", high, 2*DefaultAdaptive.Initial)
	}
	s.limits = s.limits[:0]
	s.run(1600, 20*time.Second)
	var over int
	for _, l := range s.limits {
		if l > 13 {
			over++
		}
	}
	if share := float64(over) / float64(len(s.limits)); share > 0.002 {
		t.Errorf("limit above 13 (bottleneck 8) for %.2f%% of the calls under 2x its capacity; want at most 0.2%%", 100*share)
	}
	if low := slices.Min(s.limits); low < 4 {
		t.Errorf("limit as low as %d, below Min", low)
	}
}

func TestAdaptiveConfigValidate(t *testing.T) {
	for _, c := range []struct {
		cfg  AdaptiveConfig
		want string
	}{
		{AdaptiveConfig{Min: -1}, "must not be negative"},
		{AdaptiveConfig{Min: 50, Max: 10}, "Min 50 is above Max 10"},
		{AdaptiveConfig{Tolerance: -0.1}, "Tolerance"},
		{AdaptiveConfig{MinTolerance: -time.Millisecond}, "MinTolerance"},
		{AdaptiveConfig{Window: time.Second, ProbeInterval: 5 * time.Second}, "at least 10 Windows"},
	} {
		if _, err := NewAdaptiveLimit(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewAdaptiveLimit(%+v) = %v, want an error saying %q", c.cfg, err, c.want)
		}
	}
	a, err := NewAdaptiveLimit(AdaptiveConfig{Max: 10})
	if err != nil || a.Limit() != 10 {
		t.Errorf("NewAdaptiveLimit(Max 10) = %v, %v; want a limit starting at 10", a, err)
	}
	if FixedLimit(0).Limit() != 1 || FixedLimit(7).Limit() != 7 {
		t.Error("FixedLimit: want at least 1, else n")
	}
}

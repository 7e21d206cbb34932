package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/metrics"

	"github.com/trimkit/trimkit/internal/ctxtime"
	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/internal/proc"
	"github.com/trimkit/trimkit/trimsvc"
)

// load is the chaos soak's open-loop load: calls at a fixed rate, each on
// its own goroutine, counted by the fault in progress when each started.
// It keeps counters only, not every call (as loadgen.Run does), so that
// the process's RSS is the client's and not a record of the run: the
// calls and failures of each second (a loadgen.Timeline, 8 bytes a
// second), and, for each fault, when its first and last failure happened.
type load struct {
	e    endpoint.Endpoint
	rate float64

	// window is the fault in progress: an index into the soak's faults,
	// -1 before the first. Set by the soak, read by every call.
	window atomic.Int64
	calls  atomic.Int64 // started
	failed atomic.Int64

	mu       sync.Mutex // guards what follows
	timeline loadgen.Timeline
	// offered and latency are, by second since the start, the calls
	// started and the latencies of those that ended (latencySecond, 512
	// bytes a second), for the report's charts.
	offered []uint32
	latency []latencySecond
	// Touched by failed calls only.
	failedBy map[int64]int64
	errsBy   map[int64]map[string]int // each window's error messages, counted
	spanBy   map[int64]failSpan       // each window's first and last failure

	stop chan struct{}
	done sync.WaitGroup // the loop and every call in flight
}

func newLoad(e endpoint.Endpoint, rate float64) *load {
	l := &load{e: e, rate: rate, failedBy: map[int64]int64{}, errsBy: map[int64]map[string]int{}, spanBy: map[int64]failSpan{}, stop: make(chan struct{})}
	l.window.Store(-1)
	return l
}

// start starts the calls; Stop ends them.
func (l *load) start(ctx context.Context) {
	begin := time.Now()
	l.mu.Lock()
	l.timeline = loadgen.NewTimeline(begin)
	l.mu.Unlock()
	l.done.Add(1)
	go l.loop(ctx, begin)
}

func (l *load) loop(ctx context.Context, begin time.Time) {
	defer l.done.Done()
	req := trimsvc.TrimRequest{S: "  chaos,\tsoak  "}
	interval := time.Duration(float64(time.Second) / l.rate)
	for i := int64(0); ; i++ {
		_ = ctxtime.Sleep(ctx, time.Until(begin.Add(time.Duration(i)*interval)))
		select {
		case <-l.stop:
			return
		default:
		}
		if ctx.Err() != nil {
			return
		}
		window := l.window.Load()
		l.calls.Add(1)
		l.mu.Lock()
		sec := int(time.Since(begin) / time.Second)
		for len(l.offered) <= sec {
			l.offered = append(l.offered, 0)
		}
		l.offered[sec]++
		l.mu.Unlock()
		l.done.Add(1)
		go func() {
			defer l.done.Done()
			c := loadgen.Do(ctx, l.e, req)
			end := c.Start.Add(c.Took)
			l.mu.Lock()
			l.timeline.Add(end, c.Err != nil)
			sec := int(end.Sub(begin) / time.Second)
			for len(l.latency) <= sec {
				l.latency = append(l.latency, latencySecond{})
			}
			l.latency[sec].add(c.Took)
			l.mu.Unlock()
			if c.Err != nil {
				l.fail(window, end, c.Err)
			}
		}()
	}
}

// failSpan is when a window's first and last failed calls ended.
type failSpan struct{ first, last time.Time }

func (l *load) fail(window int64, end time.Time, err error) {
	l.failed.Add(1)
	msg := err.Error()
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failedBy[window]++
	sp, ok := l.spanBy[window]
	if !ok || end.Before(sp.first) {
		sp.first = end
	}
	if end.After(sp.last) {
		sp.last = end
	}
	l.spanBy[window] = sp
	if l.errsBy[window] == nil {
		l.errsBy[window] = map[string]int{}
	}
	if len(l.errsBy[window]) < 5 || l.errsBy[window][msg] > 0 {
		l.errsBy[window][msg]++
	}
}

// failures returns the calls that failed in window and their errors.
func (l *load) failures(window int64) (int64, map[string]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	errs := map[string]int{}
	for m, n := range l.errsBy[window] {
		errs[m] = n
	}
	return l.failedBy[window], errs
}

// failedFromTo returns when window's first and last failures happened, in
// seconds since the load started; ok is false when none did.
func (l *load) failedFromTo(window int64) (first, last float64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	sp, ok := l.spanBy[window]
	start := l.timeline.Start()
	return sp.first.Sub(start).Seconds(), sp.last.Sub(start).Seconds(), ok
}

// failureTimes is the load's start, its calls and failures by second, and
// its first and last failure (nil for none).
func (l *load) failureTimes() loadgen.FailureTimes {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.timeline.FailureTimes()
}

// latencySecond counts one second's latencies in log buckets, four to a
// power of two of microseconds (each 19% wide), up to 2^32us: enough for
// a chart's p99, in 512 bytes.
type latencySecond [128]uint32

func (s *latencySecond) add(d time.Duration) {
	us := max(float64(d)/float64(time.Microsecond), 1)
	s[min(int(4*math.Log2(us)), len(s)-1)]++
}

// percentile is the upper edge of the bucket that holds the nearest-rank
// percentile p; 0 without calls.
func (s *latencySecond) percentile(p float64) time.Duration {
	var n uint64
	for _, c := range s {
		n += uint64(c)
	}
	if n == 0 {
		return 0
	}
	rank := max(uint64(math.Ceil(float64(n)*p/100)), 1)
	var seen uint64
	for i, c := range s {
		if seen += uint64(c); seen >= rank {
			return time.Duration(math.Exp2(float64(i+1)/4) * float64(time.Microsecond))
		}
	}
	return 0
}

// series is the load's seconds for the report: offered calls, calls that
// answered and failed, and the p99 latency of those that ended, each
// second.
func (l *load) series() (start time.Time, offered, answered, failed, p99 []float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	start = l.timeline.Start()
	for _, c := range l.offered {
		offered = append(offered, float64(c))
	}
	for _, s := range l.timeline.PerSecond() {
		answered, failed = append(answered, float64(s.Calls-s.Failures)), append(failed, float64(s.Failures))
	}
	for i := range l.latency {
		p99 = append(p99, float64(l.latency[i].percentile(99))/float64(time.Millisecond))
	}
	return start, offered, answered, failed, p99
}

// Stop stops calling and waits for the calls in flight.
func (l *load) Stop() {
	close(l.stop)
	l.done.Wait()
}

// heldGauge is the client's Held gauge (instances held against
// discovery, see client.FailStatic), keeping the largest value since it
// was last taken.
type heldGauge struct{ now, max atomic.Int64 }

var _ metrics.Gauge = (*heldGauge)(nil)

func (g *heldGauge) With(...string) metrics.Gauge { return g }
func (g *heldGauge) Add(d float64)                { g.Set(float64(g.now.Load()) + d) }

func (g *heldGauge) Set(v float64) {
	n := int64(v)
	g.now.Store(n)
	for {
		m := g.max.Load()
		if n <= m || g.max.CompareAndSwap(m, n) {
			return
		}
	}
}

// takeMax returns the largest value since the last takeMax.
func (g *heldGauge) takeMax() int64 { return g.max.Swap(g.now.Load()) }

// rss samples this process's resident set size (VmRSS) every second and
// keeps the largest.
type rss struct {
	first, max atomic.Int64 // bytes

	mu     sync.Mutex
	start  time.Time
	points []rssPoint // every sample run took
}

type rssPoint struct {
	at    time.Duration // since start
	bytes int64
}

func (r *rss) sample() int64 {
	n := vmRSS()
	r.first.CompareAndSwap(0, n)
	for {
		m := r.max.Load()
		if n <= m || r.max.CompareAndSwap(m, n) {
			return n
		}
	}
}

// run samples every second until ctx ends, keeping each sample.
func (r *rss) run(ctx context.Context) {
	r.mu.Lock()
	r.start = time.Now()
	r.mu.Unlock()
	for ctxtime.Sleep(ctx, time.Second) {
		n := r.sample()
		r.mu.Lock()
		r.points = append(r.points, rssPoint{time.Since(r.start), n})
		r.mu.Unlock()
	}
}

// series is run's samples, and when it started.
func (r *rss) series() (time.Time, []rssPoint) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.start, slices.Clone(r.points)
}

// vmRSS is this process's resident set size, in bytes; 0 when unknown.
func vmRSS() int64 {
	n, _ := proc.Memory(os.Getpid(), "VmRSS")
	return n
}

func mb(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/(1<<20)) }

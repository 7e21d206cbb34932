package loadgen

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/endpoint"

	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
)

// Call is one request of a load: when it started, how long it took, the
// instance that answered and its error (the endpoint's, or the response's
// business error).
type Call struct {
	Start    time.Time
	Took     time.Duration
	Instance string
	Err      error
}

// Do makes one TrimSpace call through e, a client endpoint answering with
// trim.TrimResponse, and records it.
func Do(ctx context.Context, e endpoint.Endpoint, req trimsvc.TrimRequest) Call {
	c := Call{Start: time.Now()}
	resp, err := e(ctx, req)
	c.Took = time.Since(c.Start)
	if err == nil {
		tr := resp.(trim.TrimResponse)
		c.Instance, err = tr.Instance, tr.Err
	}
	c.Err = err
	return c
}

// Options says how a run sends its calls.
type Options struct {
	// Rate, when positive, sends calls at a fixed rate, calls per second,
	// each on its own goroutine, whether earlier ones have returned or not
	// (an open loop, as wrk2 does); a call's latency counts from when it was
	// due, so a stalled instance cannot hide its delay by holding its
	// callers back (coordinated omission). When 0, Callers goroutines call
	// back to back (a closed loop).
	Rate float64
	// Callers is how many goroutines call in a closed loop. Default 1.
	Callers int
	// N stops the run after N calls; Duration after that long (no call
	// starts later). With neither, the run goes on until Stop or the
	// context ends.
	N        int
	Duration time.Duration
	// SummaryOnly keeps no Call: the run sums them up as they end (Summary)
	// in memory that does not grow with the calls (8 bytes a second of
	// the run, for Summary.PerSecond), and Wait and Stop return
	// no calls. For long runs: a Call is 64 bytes, 11 MB for 10 minutes
	// at 300 calls/s, more while its slice grows.
	SummaryOnly bool
}

// Run is load in progress: the one loop behind cmd/client's load
// generator, the tests' steady load and the benchmarks'.
type Run struct {
	stop    atomic.Bool
	stopped chan struct{} // closed by whoever set stop: wakes the open loop
	wg      sync.WaitGroup
	start   time.Time
	until   time.Time // with Duration: no call starts after it
	done    atomic.Int64
	failed  atomic.Int64

	summaryOnly bool

	mu    sync.Mutex
	calls []Call // unless summaryOnly
	sum   summarizer
	end   time.Time
}

// Start starts calling e with text as o says, until N calls, Duration,
// Stop (or StopStarting), or ctx ends. Calls run under ctx: when it ends,
// the calls in flight end with it; after StopStarting they go on to their
// end.
func Start(ctx context.Context, e endpoint.Endpoint, text string, o Options) *Run {
	r := &Run{start: time.Now(), summaryOnly: o.SummaryOnly, stopped: make(chan struct{})}
	r.sum.timeline = NewTimeline(r.start)
	req := trimsvc.TrimRequest{S: text}
	if o.Duration > 0 {
		r.until = r.start.Add(o.Duration)
	}
	if o.Rate > 0 {
		r.wg.Add(1)
		go r.openLoop(ctx, e, req, o)
		return r
	}
	var sent atomic.Int64
	for range max(o.Callers, 1) {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			var mine []Call
			for !r.stop.Load() && ctx.Err() == nil && (r.until.IsZero() || time.Now().Before(r.until)) &&
				(o.N == 0 || sent.Add(1) <= int64(o.N)) {
				c := Do(ctx, e, req)
				r.count(c)
				if r.summaryOnly {
					r.record(c)
				} else {
					mine = append(mine, c)
				}
			}
			r.record(mine...)
		}()
	}
	return r
}

// openLoop sends calls at o.Rate: every call that is due is started, each
// on its own goroutine, then it sleeps until the next is due.
func (r *Run) openLoop(ctx context.Context, e endpoint.Endpoint, req trimsvc.TrimRequest, o Options) {
	defer r.wg.Done()
	interval := time.Duration(float64(time.Second) / o.Rate)
	var calls sync.WaitGroup
	defer calls.Wait()
	for i := int64(0); o.N == 0 || i < int64(o.N); i++ {
		due := r.start.Add(time.Duration(i) * interval)
		r.sleep(ctx, time.Until(due)) // an ended ctx, or a stop, is checked next
		if r.stop.Load() || ctx.Err() != nil || (!r.until.IsZero() && due.After(r.until)) {
			return
		}
		calls.Add(1)
		go func() {
			defer calls.Done()
			c := Do(ctx, e, req)
			// From when it was due, not when it started.
			c.Took += c.Start.Sub(due)
			c.Start = due
			r.count(c)
			r.record(c)
		}()
	}
}

// sleep waits d, or until ctx ends or the run is stopped.
func (r *Run) sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	case <-r.stopped:
	}
}

// count counts a call for Progress: atomics only, as it runs after every
// call.
func (r *Run) count(c Call) {
	r.done.Add(1)
	if c.Err != nil {
		r.failed.Add(1)
	}
}

// record adds calls, done by now, to the run: once per closed-loop caller,
// once per open-loop call.
func (r *Run) record(calls ...Call) {
	now := time.Now()
	r.mu.Lock()
	for _, c := range calls {
		r.sum.add(c)
	}
	if !r.summaryOnly {
		r.calls = append(r.calls, calls...)
	}
	if now.After(r.end) {
		r.end = now
	}
	r.mu.Unlock()
}

// Progress reports the calls done and failed so far.
func (r *Run) Progress() (done, failed int64) { return r.done.Load(), r.failed.Load() }

// Wait waits for the run to end by itself (N calls, Duration, or its
// context) and returns every call, in no particular order, and how long the
// run took.
func (r *Run) Wait() ([]Call, time.Duration) {
	r.wg.Wait()
	return r.calls, r.end.Sub(r.start)
}

// Summary sums up the run's calls so far, as Summarize does but with
// percentiles read from a histogram (at most 1.6% above the exact ones),
// and returns a few distinct failure messages. After Wait it covers the
// whole run.
func (r *Run) Summary() (Summary, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sum.summary(r.end.Sub(r.start))
}

// StopStarting ends the run without waiting: no call starts after it,
// and the calls in flight go on to their end (their context is not
// cancelled), which Wait waits for. It may be called any number of times.
func (r *Run) StopStarting() {
	if r.stop.CompareAndSwap(false, true) {
		close(r.stopped)
	}
}

// Stop ends the run: no call starts after it, and the calls in flight
// finish. It returns every call and how long the run took.
func (r *Run) Stop() ([]Call, time.Duration) {
	r.StopStarting()
	return r.Wait()
}

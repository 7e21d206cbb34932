package loadgen

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/endpoint"

	"github.com/trimkit/trimkit/transport"
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
// transport.TrimResponse, and records it.
func Do(ctx context.Context, e endpoint.Endpoint, req trimsvc.TrimRequest) Call {
	c := Call{Start: time.Now()}
	resp, err := e(ctx, req)
	c.Took = time.Since(c.Start)
	if err == nil {
		tr := resp.(transport.TrimResponse)
		c.Instance, err = tr.Instance, tr.Err
	}
	c.Err = err
	return c
}

// Options says how a run sends its calls.
type Options struct {
	// Callers is how many goroutines call, each back to back (a closed
	// loop). Default 1.
	Callers int
	// N stops the run after N calls; 0 runs until Stop or the context ends.
	N int
}

// Run is load in progress: the one loop behind cmd/client's load
// generator, the tests' steady load and the benchmarks'.
type Run struct {
	stop  atomic.Bool
	wg    sync.WaitGroup
	start time.Time

	mu    sync.Mutex
	calls []Call
	end   time.Time
}

// Start starts calling e with text as o says, until N calls, Stop, or ctx
// ends. Calls run under ctx: when it ends, the calls in flight end with it.
func Start(ctx context.Context, e endpoint.Endpoint, text string, o Options) *Run {
	r := &Run{start: time.Now()}
	req := trimsvc.TrimRequest{S: text}
	var sent atomic.Int64
	for range max(o.Callers, 1) {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			var mine []Call
			for !r.stop.Load() && ctx.Err() == nil && (o.N == 0 || sent.Add(1) <= int64(o.N)) {
				mine = append(mine, Do(ctx, e, req))
			}
			r.mu.Lock()
			r.calls = append(r.calls, mine...)
			if now := time.Now(); now.After(r.end) {
				r.end = now
			}
			r.mu.Unlock()
		}()
	}
	return r
}

// Wait waits for the run to end by itself (N calls, or its context) and
// returns every call, in no particular order, and how long the run took.
func (r *Run) Wait() ([]Call, time.Duration) {
	r.wg.Wait()
	return r.calls, r.end.Sub(r.start)
}

// Stop ends the run: no call starts after it, and the calls in flight
// finish. It returns every call and how long the run took.
func (r *Run) Stop() ([]Call, time.Duration) {
	r.stop.Store(true)
	return r.Wait()
}

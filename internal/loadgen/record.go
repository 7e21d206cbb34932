package loadgen

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/endpoint"

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

// Do makes one TrimSpace call through e and records it.
func Do(ctx context.Context, e endpoint.Endpoint, req trimsvc.TrimRequest) Call {
	c := Call{Start: time.Now()}
	resp, err := e(ctx, req)
	c.Took = time.Since(c.Start)
	if err == nil {
		tr := resp.(trimsvc.TrimResponse)
		c.Instance, err = tr.Instance, tr.Err
	}
	c.Err = err
	return c
}

// Recorder keeps calling an endpoint from several goroutines until Stop,
// recording every call; tests and benchmarks use it as steady load while
// instances come and go.
type Recorder struct {
	stop  atomic.Bool
	wg    sync.WaitGroup
	mu    sync.Mutex
	calls []Call
}

// Record starts callers goroutines calling e with text, back to back.
func Record(e endpoint.Endpoint, text string, callers int) *Recorder {
	r := &Recorder{}
	req := trimsvc.TrimRequest{S: text}
	for range callers {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			var mine []Call
			for !r.stop.Load() {
				mine = append(mine, Do(context.Background(), e, req))
			}
			r.mu.Lock()
			r.calls = append(r.calls, mine...)
			r.mu.Unlock()
		}()
	}
	return r
}

// Stop stops the callers, waits for their calls in flight and returns every
// call made.
func (r *Recorder) Stop() []Call {
	r.stop.Store(true)
	r.wg.Wait()
	return r.calls
}

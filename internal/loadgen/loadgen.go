package loadgen

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/endpoint"

	"github.com/trimkit/trimkit/trimsvc"
)

// maxErrorSamples is how many distinct failures a run keeps.
const maxErrorSamples = 5

// Summary is what a load run reports; its JSON keys are cmd/client's
// -json contract.
type Summary struct {
	Requests    int            `json:"requests"`
	Failures    int            `json:"failures"`
	RPS         float64        `json:"rps"`
	P50ms       float64        `json:"p50_ms"`
	P90ms       float64        `json:"p90_ms"`
	P99ms       float64        `json:"p99_ms"`
	PerInstance map[string]int `json:"per_instance"`
}

// Print writes the summary as text.
func (s Summary) Print(w io.Writer) {
	fmt.Fprintf(w, "requests:  %d\nfailures:  %d\nreq/s:     %.0f\nlatency:   p50 %.3fms  p90 %.3fms  p99 %.3fms\nper instance:\n",
		s.Requests, s.Failures, s.RPS, s.P50ms, s.P90ms, s.P99ms)
	ids := make([]string, 0, len(s.PerInstance))
	for id := range s.PerInstance {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		fmt.Fprintf(w, "  %-40s %d\n", id, s.PerInstance[id])
	}
}

// Run sends n TrimSpace requests for text through e from c concurrent
// callers, stopping early when ctx is done, and returns the summary and a
// few distinct failure messages. A request fails when e returns an error or
// a response with Err set; it counts for the instance in the response.
func Run(ctx context.Context, e endpoint.Endpoint, text string, n, c int) (Summary, []string) {
	type result struct {
		latencies []time.Duration
		perInst   map[string]int
		failures  int
		errs      []string
	}
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		results = make([]result, c)
		req     = trimsvc.TrimRequest{S: text}
	)
	start := time.Now()
	for w := range c {
		wg.Add(1)
		go func(r *result) {
			defer wg.Done()
			r.perInst = map[string]int{}
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				call := Do(ctx, e, req)
				r.latencies = append(r.latencies, call.Took)
				if call.Err == nil {
					r.perInst[call.Instance]++
					continue
				}
				r.failures++
				if msg := call.Err.Error(); len(r.errs) < maxErrorSamples && !slices.Contains(r.errs, msg) {
					r.errs = append(r.errs, msg)
				}
			}
		}(&results[w])
	}
	wg.Wait()
	elapsed := time.Since(start)

	s := Summary{PerInstance: map[string]int{}}
	var (
		all  []time.Duration
		errs []string
	)
	for _, r := range results {
		all = append(all, r.latencies...)
		s.Failures += r.failures
		for id, k := range r.perInst {
			s.PerInstance[id] += k
		}
		for _, e := range r.errs {
			if len(errs) < maxErrorSamples && !slices.Contains(errs, e) {
				errs = append(errs, e)
			}
		}
	}
	s.Requests = len(all)
	if elapsed > 0 {
		s.RPS = float64(s.Requests) / elapsed.Seconds()
	}
	slices.Sort(all)
	s.P50ms, s.P90ms, s.P99ms = percentileMS(all, 50), percentileMS(all, 90), percentileMS(all, 99)
	return s, errs
}

// percentileMS is the nearest-rank percentile p of sorted, in milliseconds.
func percentileMS(sorted []time.Duration, p int) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100 // ceil(len*p/100), 1-based rank
	return float64(sorted[max(i, 1)-1]) / float64(time.Millisecond)
}

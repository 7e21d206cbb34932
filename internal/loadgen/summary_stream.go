package loadgen

import (
	"math"
	"slices"
	"time"
)

func ceil(f float64) float64 { return math.Ceil(f) }

// summarizer sums calls up as they end, in memory that does not grow with
// the run: counts, a latency histogram, the calls each instance answered,
// a few distinct failures.
type summarizer struct {
	requests, failures int
	took               histogram
	perInstance        map[string]int
	errs               []string
}

func (s *summarizer) add(c Call) {
	s.requests++
	s.took.add(c.Took)
	if c.Err == nil {
		if s.perInstance == nil {
			s.perInstance = map[string]int{}
		}
		s.perInstance[c.Instance]++
		return
	}
	s.failures++
	if len(s.errs) < maxErrorSamples {
		if msg := c.Err.Error(); !slices.Contains(s.errs, msg) {
			s.errs = append(s.errs, msg)
		}
	}
}

func (s *summarizer) summary(elapsed time.Duration) (Summary, []string) {
	out := Summary{Requests: s.requests, Failures: s.failures, PerInstance: map[string]int{}}
	for k, v := range s.perInstance {
		out.PerInstance[k] = v
	}
	if elapsed > 0 {
		out.RPS = float64(s.requests) / elapsed.Seconds()
	}
	h := &s.took
	out.P50ms, out.P90ms, out.P99ms = ms(h.percentile(50)), ms(h.percentile(90)), ms(h.percentile(99))
	out.P999ms, out.MaxMs = ms(h.percentile(99.9)), ms(h.percentile(100))
	return out, slices.Clone(s.errs)
}

package loadgen

import (
	"math"
	"slices"
	"time"
)

func ceil(f float64) float64 { return math.Ceil(f) }

// summarizer sums calls up as they end, in memory that does not grow with
// the calls: counts, a latency histogram, the calls each instance
// answered, a few distinct failures, and the calls and failures of each
// second (Timeline: 8 bytes a second of the run).
type summarizer struct {
	requests, failures int
	took               histogram
	perInstance        map[string]int
	errs               []string
	timeline           Timeline // its start set by the run
}

func (s *summarizer) add(c Call) {
	s.requests++
	s.took.add(c.Took)
	s.timeline.Add(c.Start.Add(c.Took), c.Err != nil)
	if c.Err == nil {
		if s.perInstance == nil {
			s.perInstance = map[string]int{}
		}
		s.perInstance[c.Instance]++
		return
	}
	s.failures++
	if len(s.errs) < maxErrorSamples { // a message costs something to make
		s.errs = addSample(s.errs, c.Err.Error())
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
	out.FailureTimes = s.timeline.FailureTimes()
	return out, slices.Clone(s.errs)
}

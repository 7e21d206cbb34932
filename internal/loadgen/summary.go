package loadgen

import (
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

// maxErrorSamples is how many distinct failures a summary keeps.
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
	P999ms      float64        `json:"p999_ms"`
	MaxMs       float64        `json:"max_ms"`
	PerInstance map[string]int `json:"per_instance"`
	// Attempts is every attempt the calls made, retries and hedges
	// included; the caller fills it in from the client's metrics.
	Attempts int `json:"attempts"`
	// FailureTimes is when the calls failed (for Summarize, its Start is
	// when the first call started).
	FailureTimes
}

// FailureTimes is when the calls of a run failed, second by second.
type FailureTimes struct {
	// Start is when the run started, RFC 3339 in UTC with milliseconds.
	Start string `json:"start"`
	// PerSecond is every second of the run, from its start: the calls
	// that ended in it, and those of them that failed.
	PerSecond []Second `json:"per_second"`
	// FirstFailure and LastFailure are when the first and the last failed
	// call ended; null when none failed.
	FirstFailure *Moment `json:"first_failure"`
	LastFailure  *Moment `json:"last_failure"`
}

// Summarize sums up calls made over elapsed, and returns a few distinct
// failure messages. Latency percentiles are over every call, failed ones
// included; a successful call counts for the instance that answered it.
func Summarize(calls []Call, elapsed time.Duration) (Summary, []string) {
	s := Summary{Requests: len(calls), PerInstance: map[string]int{}}
	var errs []string
	took := make([]time.Duration, 0, len(calls))
	var start time.Time
	for _, c := range calls {
		if start.IsZero() || c.Start.Before(start) {
			start = c.Start
		}
	}
	tl := NewTimeline(start)
	for _, c := range calls {
		took = append(took, c.Took)
		tl.Add(c.Start.Add(c.Took), c.Err != nil)
		if c.Err == nil {
			s.PerInstance[c.Instance]++
			continue
		}
		s.Failures++
		if len(errs) < maxErrorSamples { // as the summarizer does
			errs = addSample(errs, c.Err.Error())
		}
	}
	s.FailureTimes = tl.FailureTimes()
	if elapsed > 0 {
		s.RPS = float64(s.Requests) / elapsed.Seconds()
	}
	slices.Sort(took)
	s.P50ms, s.P90ms, s.P99ms = ms(Percentile(took, 50)), ms(Percentile(took, 90)), ms(Percentile(took, 99))
	s.P999ms, s.MaxMs = ms(Percentile(took, 99.9)), ms(Percentile(took, 100))
	return s, errs
}

// Print writes the summary as text.
func (s Summary) Print(w io.Writer) {
	fmt.Fprintf(w, "requests:  %d\nfailures:  %d\nattempts:  %d\nreq/s:     %.0f\nlatency:   p50 %.3fms  p90 %.3fms  p99 %.3fms  p99.9 %.3fms  max %.3fms\nper instance:\n",
		s.Requests, s.Failures, s.Attempts, s.RPS, s.P50ms, s.P90ms, s.P99ms, s.P999ms, s.MaxMs)
	ids := make([]string, 0, len(s.PerInstance))
	for id := range s.PerInstance {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		fmt.Fprintf(w, "  %-40s %d\n", id, s.PerInstance[id])
	}
	s.FailureTimes.Print(w)
}

// addSample adds msg to samples, a few distinct failure messages, unless
// it is there already. A message that a kept one begins with, or that
// begins with a kept one, is taken for the same failure said with more or
// less after it (sd says what to do about an unreachable Consul once, at
// the end of the first such failure's message): the longer is kept.
func addSample(samples []string, msg string) []string {
	for i, kept := range samples {
		if strings.HasPrefix(kept, msg) {
			return samples
		}
		if strings.HasPrefix(msg, kept) {
			samples[i] = msg
			return samples
		}
	}
	if len(samples) < maxErrorSamples {
		samples = append(samples, msg)
	}
	return samples
}

// Percentile is the nearest-rank percentile p (0 < p <= 100) of sorted: the
// smallest value that at least p% of the values are at or below. Zero for
// no values.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(float64(len(sorted)) * p / 100)) // 1-based
	return sorted[min(max(rank, 1), len(sorted))-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

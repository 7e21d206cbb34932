package loadgen

import (
	"fmt"
	"io"
	"time"
)

// Second is one second of a run: the calls that ended in it, and how many
// of them failed. Second counts from the run's start, 0 for its first.
type Second struct {
	Second   int `json:"second"`
	Calls    int `json:"calls"`
	Failures int `json:"failures"`
}

// Moment is when something happened in a run: the wall-clock time, RFC
// 3339 in UTC with milliseconds, and the seconds since the run's start.
type Moment struct {
	Time    string  `json:"time"`
	Seconds float64 `json:"seconds"`
}

// FormatTime formats t as a Summary's times are: RFC 3339 in UTC with
// milliseconds, such as 2026-03-01T12:00:02.100Z.
func FormatTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }

// maxSeconds bounds a timeline: a call that ends later than this after
// the start counts in the last second it keeps.
const maxSeconds = 31 * 24 * 3600

// Timeline counts a run's calls and failures by the second they ended
// (as a metrics counter counts them), and keeps when the first and the
// last failure happened: 8 bytes a second of the run, whatever the rate,
// and nothing a call. Make it with NewTimeline; it is not safe for
// concurrent use.
type Timeline struct {
	start       time.Time
	seconds     []secondCount
	first, last time.Time // ends of failed calls; zero: none
}

type secondCount struct{ calls, failures uint32 }

// NewTimeline returns a timeline of a run that started at start.
func NewTimeline(start time.Time) Timeline { return Timeline{start: start} }

// Start is the run's start.
func (t *Timeline) Start() time.Time { return t.start }

// Add counts a call that ended at end, failed or not.
func (t *Timeline) Add(end time.Time, failed bool) {
	i := min(max(int(end.Sub(t.start)/time.Second), 0), maxSeconds)
	for len(t.seconds) <= i {
		t.seconds = append(t.seconds, secondCount{})
	}
	t.seconds[i].calls++
	if !failed {
		return
	}
	t.seconds[i].failures++
	if t.first.IsZero() || end.Before(t.first) {
		t.first = end
	}
	if end.After(t.last) {
		t.last = end
	}
}

// PerSecond is every second from the start to the last call's end, those
// without calls included.
func (t *Timeline) PerSecond() []Second {
	out := make([]Second, len(t.seconds))
	for i, c := range t.seconds {
		out[i] = Second{Second: i, Calls: int(c.calls), Failures: int(c.failures)}
	}
	return out
}

// FirstFailure and LastFailure are when the first and the last failed
// call ended; nil when none failed.
func (t *Timeline) FirstFailure() *Moment { return t.moment(t.first) }

// LastFailure: see FirstFailure.
func (t *Timeline) LastFailure() *Moment { return t.moment(t.last) }

func (t *Timeline) moment(at time.Time) *Moment {
	if at.IsZero() {
		return nil
	}
	return &Moment{Time: FormatTime(at), Seconds: at.Sub(t.start).Seconds()}
}

// FailureTimes is the run's start, its seconds and its first and last
// failure (Start is "" until a call was added).
func (t *Timeline) FailureTimes() FailureTimes {
	f := FailureTimes{PerSecond: t.PerSecond(), FirstFailure: t.FirstFailure(), LastFailure: t.LastFailure()}
	if !t.start.IsZero() {
		f.Start = FormatTime(t.start)
	}
	return f
}

// maxFailureLines is how many lines Print writes, at most, before it
// joins consecutive seconds into one line.
const maxFailureLines = 20

// Print writes the seconds that had failures, and when the first and last
// failure happened; nothing when nothing failed. When more than 20
// seconds had failures, consecutive ones share a line, so that an outage
// of minutes takes one.
func (f FailureTimes) Print(w io.Writer) {
	first, last := f.FirstFailure, f.LastFailure
	if first == nil {
		return
	}
	type span struct{ from, to, calls, failures int }
	var spans []span
	failing := 0
	for _, s := range f.PerSecond {
		if s.Failures > 0 {
			failing++
		}
	}
	join := failing > maxFailureLines
	for _, s := range f.PerSecond {
		if s.Failures == 0 {
			continue
		}
		if n := len(spans); join && n > 0 && spans[n-1].to == s.Second-1 {
			spans[n-1].to = s.Second
			spans[n-1].calls += s.Calls
			spans[n-1].failures += s.Failures
			continue
		}
		spans = append(spans, span{s.Second, s.Second, s.Calls, s.Failures})
	}
	fmt.Fprintf(w, "failures by second since the start, %s (seconds without failures not listed):\n", f.Start)
	for _, sp := range spans {
		when := fmt.Sprintf("%ds", sp.from)
		if sp.to > sp.from {
			when = fmt.Sprintf("%d-%ds", sp.from, sp.to)
		}
		fmt.Fprintf(w, "  %-9s %d of %d calls failed\n", when, sp.failures, sp.calls)
	}
	fmt.Fprintf(w, "first failure: %s (%.3fs after the start)\n", first.Time, first.Seconds)
	fmt.Fprintf(w, "last failure:  %s (%.3fs after the start)\n", last.Time, last.Seconds)
}

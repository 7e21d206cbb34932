package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trimkit/trimkit/transport/trim"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestTimelineCountsBySecondOfTheEnd(t *testing.T) {
	tl := NewTimeline(t0)
	tl.Add(t0.Add(100*time.Millisecond), false)
	tl.Add(t0.Add(900*time.Millisecond), false)
	tl.Add(t0.Add(2500*time.Millisecond), true) // the first failure
	tl.Add(t0.Add(2100*time.Millisecond), true) // ended earlier, counted later
	tl.Add(t0.Add(3999*time.Millisecond), true)
	tl.Add(t0.Add(-time.Second), false) // before the start: second 0
	want := []Second{{0, 3, 0}, {1, 0, 0}, {2, 2, 2}, {3, 1, 1}}
	if have := tl.PerSecond(); !slices.Equal(want, have) {
		t.Errorf("per second: want %v, have %v", want, have)
	}
	if want, have := (&Moment{Time: "2026-03-01T12:00:02.100Z", Seconds: 2.1}), tl.FirstFailure(); *have != *want {
		t.Errorf("first: want %+v, have %+v", want, have)
	}
	if want, have := (&Moment{Time: "2026-03-01T12:00:03.999Z", Seconds: 3.999}), tl.LastFailure(); *have != *want {
		t.Errorf("last: want %+v, have %+v", want, have)
	}
	empty := NewTimeline(t0)
	if empty.FirstFailure() != nil || empty.LastFailure() != nil || len(empty.PerSecond()) != 0 || empty.PerSecond() == nil {
		t.Errorf("no calls: want no failures and an empty (not nil) series")
	}
}

// A summary's JSON has the series, and null first and last failures when
// nothing failed.
func TestSummaryJSONTimeline(t *testing.T) {
	calls := []Call{
		{Start: t0, Took: 10 * time.Millisecond, Instance: "a"},
		{Start: t0.Add(1500 * time.Millisecond), Took: 600 * time.Millisecond, Err: errors.New("boom")},
	}
	s, errs := Summarize(calls, 2*time.Second)
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"start":"2026-03-01T12:00:00.000Z"`, `"per_second":[{"second":0,"calls":1,"failures":0},{"second":1,"calls":0,"failures":0},{"second":2,"calls":1,"failures":1}]`,
		`"first_failure":{"time":"2026-03-01T12:00:02.100Z","seconds":2.1}`, `"last_failure":{"time":"2026-03-01T12:00:02.100Z","seconds":2.1}`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON lacks %s: %s", want, b)
		}
	}
	if !slices.Equal(errs, []string{"boom"}) {
		t.Errorf("samples %v", errs)
	}
	s, _ = Summarize(calls[:1], time.Second)
	if b, _ = json.Marshal(s); !strings.Contains(string(b), `"first_failure":null,"last_failure":null`) {
		t.Errorf("no failure: %s", b)
	}
}

func TestPrintFailures(t *testing.T) {
	var buf bytes.Buffer
	FailureTimes{PerSecond: []Second{{0, 10, 0}}}.Print(&buf)
	if buf.Len() != 0 {
		t.Errorf("no failure: printed %q", buf.String())
	}
	first, last := &Moment{"2026-03-01T12:00:12.345Z", 12.345}, &Moment{"2026-03-01T12:00:14.001Z", 14.001}
	series := make([]Second, 180)
	for i := range series {
		series[i] = Second{i, 300, 0}
	}
	series[12].Failures, series[14].Failures = 7, 1
	FailureTimes{"2026-03-01T12:00:00.000Z", series, first, last}.Print(&buf)
	want := `failures by second since the start, 2026-03-01T12:00:00.000Z (seconds without failures not listed):
  12s       7 of 300 calls failed
  14s       1 of 300 calls failed
first failure: 2026-03-01T12:00:12.345Z (12.345s after the start)
last failure:  2026-03-01T12:00:14.001Z (14.001s after the start)
`
	if have := buf.String(); have != want {
		t.Errorf("want\n%s\nhave\n%s", want, have)
	}

	// A minute of failures, and one more later: two lines.
	for i := 30; i < 90; i++ {
		series[i].Failures = 300
	}
	series[100].Failures = 2
	buf.Reset()
	FailureTimes{"s", series, first, last}.Print(&buf)
	for _, want := range []string{"\n  12s       7 of 300 calls failed\n", "\n  14s       1 of 300 calls failed\n",
		"\n  30-89s    18000 of 18000 calls failed\n", "\n  100s      2 of 300 calls failed\n"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("lacks %q:\n%s", want, buf.String())
		}
	}
	if n := strings.Count(buf.String(), "\n"); n != 7 {
		t.Errorf("%d lines, want 7:\n%s", n, buf.String())
	}
}

// The same failure said with and without a hint at its end counts as one
// sample, the longer kept.
func TestSamplesTakeAHintedMessageForTheSame(t *testing.T) {
	var samples []string
	for _, msg := range []string{"no instance: x", "no instance: x; hint", "no instance: x", "other", "no instance: x; hint"} {
		samples = addSample(samples, msg)
	}
	if want := []string{"no instance: x; hint", "other"}; !slices.Equal(samples, want) {
		t.Errorf("want %q, have %q", want, samples)
	}
	for i := range 10 {
		samples = addSample(samples, fmt.Sprint("distinct ", i))
	}
	if len(samples) != maxErrorSamples {
		t.Errorf("%d samples, want at most %d", len(samples), maxErrorSamples)
	}
}

// StopStarting returns at once: no call starts after it, the calls in
// flight end by themselves (their context is not cancelled), and an open
// loop waiting for its next call wakes up.
func TestStopStartingLetsCallsInFlightEnd(t *testing.T) {
	for _, o := range []Options{{Callers: 3}, {Rate: 20}, {Rate: 0.1}} {
		var started, cancelled atomic.Int64
		e := func(ctx context.Context, _ interface{}) (interface{}, error) {
			started.Add(1)
			select {
			case <-time.After(200 * time.Millisecond):
				return trim.TrimResponse{Instance: "a"}, nil
			case <-ctx.Done():
				cancelled.Add(1)
				return nil, ctx.Err()
			}
		}
		r := Start(context.Background(), e, "x", o)
		time.Sleep(50 * time.Millisecond)
		begin := time.Now()
		r.StopStarting()
		r.StopStarting() // twice is fine
		if d := time.Since(begin); d > 50*time.Millisecond {
			t.Errorf("%+v: StopStarting took %v", o, d)
		}
		calls, _ := r.Wait()
		s, _ := r.Summary()
		if cancelled.Load() != 0 || int64(len(calls)) != started.Load() || s.Failures != 0 || s.Requests != len(calls) || len(calls) == 0 {
			t.Errorf("%+v: %d started, %d cancelled, %d calls, summary %+v", o, started.Load(), cancelled.Load(), len(calls), s)
		}
		if d := time.Since(begin); d > 5*time.Second {
			t.Errorf("%+v: the run ended %v after StopStarting", o, d)
		}
	}
}

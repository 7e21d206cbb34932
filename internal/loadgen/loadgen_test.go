package loadgen

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
)

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 1000; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 500 * time.Millisecond}, {90, 900 * time.Millisecond}, {99, 990 * time.Millisecond}, {99.9, 999 * time.Millisecond}, {100, time.Second}} {
		if have := Percentile(d, tc.p); have != tc.want {
			t.Errorf("p%v: want %v, have %v", tc.p, tc.want, have)
		}
	}
	if have := Percentile(nil, 50); have != 0 {
		t.Errorf("empty: want 0, have %v", have)
	}
	if have := Percentile(d[:1], 0.1); have != time.Millisecond {
		t.Errorf("one value: want it, have %v", have)
	}
}

func TestRunCountsEveryCall(t *testing.T) {
	var n int
	e := func(_ context.Context, req interface{}) (interface{}, error) {
		n++ // one caller: no race
		if n%10 == 0 {
			return nil, errors.New("every tenth fails")
		}
		return trim.TrimResponse{TrimResponse: trimsvc.TrimResponse{S: req.(trimsvc.TrimRequest).S}, Instance: "a"}, nil
	}
	calls, elapsed := Start(context.Background(), e, "x", Options{N: 100}).Wait()
	s, errs := Summarize(calls, elapsed)
	if s.Requests != 100 || s.Failures != 10 || s.PerInstance["a"] != 90 {
		t.Errorf("summary %+v", s)
	}
	if want, have := []string{"every tenth fails"}, errs; len(have) != 1 || have[0] != want[0] {
		t.Errorf("error samples: want %v, have %v", want, have)
	}
}

func TestOpenLoopKeepsItsRateAndCountsFromTheDueTime(t *testing.T) {
	stall := make(chan struct{})
	var n int64
	var mu sync.Mutex
	e := func(ctx context.Context, req interface{}) (interface{}, error) {
		mu.Lock()
		n++
		first := n == 1
		mu.Unlock()
		if first {
			<-stall // the first call holds on; the loop does not wait for it
		}
		return trim.TrimResponse{Instance: "a"}, nil
	}
	time.AfterFunc(200*time.Millisecond, func() { close(stall) })
	calls, _ := Start(context.Background(), e, "x", Options{Rate: 200, N: 40}).Wait()
	if want, have := 40, len(calls); want != have {
		t.Fatalf("calls: want %d, have %d", want, have)
	}
	slices.SortFunc(calls, func(a, b Call) int { return a.Start.Compare(b.Start) })
	// Due every 5ms, from the start, whatever the stalled call did.
	for i := 1; i < len(calls); i++ {
		if d := calls[i].Start.Sub(calls[i-1].Start); d != 5*time.Millisecond {
			t.Fatalf("calls %d and %d due %v apart, want 5ms", i-1, i, d)
		}
	}
	if calls[0].Took < 190*time.Millisecond {
		t.Errorf("the stalled call took %v, want its whole stall counted", calls[0].Took)
	}
}

func TestDurationEndsTheRun(t *testing.T) {
	e := func(context.Context, interface{}) (interface{}, error) {
		return trim.TrimResponse{Instance: "a"}, nil
	}
	for _, o := range []Options{{Rate: 1000, Duration: 100 * time.Millisecond}, {Callers: 2, Duration: 100 * time.Millisecond}} {
		calls, _ := Start(context.Background(), e, "x", o).Wait()
		if len(calls) == 0 {
			t.Errorf("%+v: no calls", o)
		}
		if o.Rate > 0 && len(calls) > 101 {
			t.Errorf("%+v: %d calls, want at most 101 due in 100ms", o, len(calls))
		}
	}
}

func TestSummaryOnlyMatchesSummarize(t *testing.T) {
	var mu sync.Mutex
	var n int
	e := func(_ context.Context, req interface{}) (interface{}, error) {
		mu.Lock()
		n++
		i := n
		mu.Unlock()
		time.Sleep(time.Duration(i%7) * 100 * time.Microsecond)
		if i%10 == 0 {
			return nil, errors.New("every tenth fails")
		}
		return trim.TrimResponse{Instance: []string{"a", "b"}[i%2]}, nil
	}
	full := Start(context.Background(), e, "x", Options{Callers: 4, N: 2000})
	calls, elapsed := full.Wait()
	want, wantErrs := Summarize(calls, elapsed)
	have, haveErrs := full.Summary()
	if have.Requests != want.Requests || have.Failures != want.Failures || have.PerInstance["a"] != want.PerInstance["a"] || have.PerInstance["b"] != want.PerInstance["b"] || !slices.Equal(haveErrs, wantErrs) {
		t.Fatalf("summary: want %+v %v, have %+v %v", want, wantErrs, have, haveErrs)
	}
	for _, p := range [][2]float64{{want.P50ms, have.P50ms}, {want.P90ms, have.P90ms}, {want.P99ms, have.P99ms}, {want.P999ms, have.P999ms}} {
		if p[1] < p[0] || p[1] > p[0]*1.016 {
			t.Errorf("percentile: want %v (+1.6%%), have %v", p[0], p[1])
		}
	}
	if have.MaxMs != want.MaxMs {
		t.Errorf("max: want %v, have %v", want.MaxMs, have.MaxMs)
	}
	only := Start(context.Background(), e, "x", Options{Rate: 1000, N: 200, SummaryOnly: true})
	if calls, _ := only.Wait(); len(calls) != 0 {
		t.Errorf("SummaryOnly kept %d calls", len(calls))
	}
	if s, _ := only.Summary(); s.Requests != 200 {
		t.Errorf("SummaryOnly: %d requests summed, want 200", s.Requests)
	}
}

func TestHistogramBuckets(t *testing.T) {
	prev := -1
	for _, v := range []uint64{0, 1, 127, 128, 129, 255, 256, 1000, 1 << 20, 1<<20 + 12345, 1 << 40, 1<<63 - 1} {
		i := histBucket(v)
		if i < prev || i >= histBuckets {
			t.Fatalf("%d: bucket %d after %d", v, i, prev)
		}
		prev = i
		if u := histUpper(i); u < v || float64(u-v) > float64(v)/64 {
			t.Errorf("%d: bucket %d upper %d", v, i, u)
		}
	}
}

package loadgen

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/trimkit/trimkit/transport"
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
		return transport.TrimResponse{TrimResponse: trimsvc.TrimResponse{S: req.(trimsvc.TrimRequest).S}, Instance: "a"}, nil
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

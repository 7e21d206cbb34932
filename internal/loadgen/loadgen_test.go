package loadgen

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		p    int
		want float64
	}{{50, 50}, {90, 90}, {99, 99}, {100, 100}} {
		if have := percentileMS(d, tc.p); have != tc.want {
			t.Errorf("p%d: want %v, have %v", tc.p, tc.want, have)
		}
	}
	if have := percentileMS(nil, 50); have != 0 {
		t.Errorf("empty: want 0, have %v", have)
	}
}

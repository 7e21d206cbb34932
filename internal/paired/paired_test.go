package paired

import (
	"strings"
	"testing"
	"time"
)

func TestRatiosAlternateWhichGoesFirst(t *testing.T) {
	var order []string
	a := func() time.Duration { order = append(order, "a"); return 2 * time.Millisecond }
	b := func() time.Duration { order = append(order, "b"); return 3 * time.Millisecond }
	ratios := Ratios(4, a, b)
	if want := "abbaabba"; strings.Join(order, "") != want {
		t.Errorf("order %q, want %q", strings.Join(order, ""), want)
	}
	for _, r := range ratios {
		if r != 1.5 {
			t.Errorf("ratio %v, want b's time over a's, 1.5", r)
		}
	}
}

func TestMedianInterval(t *testing.T) {
	vs := make([]float64, 400)
	for i := range vs {
		vs[len(vs)-1-i] = float64(i) // unsorted: the interval sorts
	}
	lo, mid, hi := MedianInterval(vs)
	// n/2 ± 1.96·√400/2 = 200 ± 19.6: ranks 180 and 220.
	if lo != 180 || mid != 200 || hi != 220 {
		t.Errorf("400 values 0..399: [%v, %v, %v], want [180, 200, 220]", lo, mid, hi)
	}
	if lo, mid, hi := MedianInterval([]float64{7}); lo != 7 || mid != 7 || hi != 7 {
		t.Errorf("one value: [%v, %v, %v]", lo, mid, hi)
	}
}

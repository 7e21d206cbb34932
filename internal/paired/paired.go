package paired

import (
	"math"
	"slices"
	"time"
)

// Ratios runs pairs of blocks, a's and b's, each pair started by the
// other in turn, and returns each pair's ratio of b's time over a's.
func Ratios(pairs int, a, b func() time.Duration) []float64 {
	ratios := make([]float64, 0, pairs)
	for i := range pairs {
		var ta, tb time.Duration
		if i%2 == 0 {
			ta, tb = a(), b()
		} else {
			tb, ta = b(), a()
		}
		ratios = append(ratios, float64(tb)/float64(ta))
	}
	return ratios
}

// MedianInterval is the median of vs and a 95% confidence interval for
// it: the order statistics n/2 ± 1.96·√n/2 of the sorted values, which
// assume nothing of their spread. vs must not be empty.
func MedianInterval(vs []float64) (lo, mid, hi float64) {
	s := slices.Sorted(slices.Values(vs))
	n := len(s)
	half := 1.96 * math.Sqrt(float64(n)) / 2
	return s[max(0, int(math.Floor(float64(n)/2-half)))], s[n/2], s[min(n-1, int(math.Ceil(float64(n)/2+half)))]
}

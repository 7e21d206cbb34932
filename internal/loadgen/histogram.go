package loadgen

import (
	"math/bits"
	"time"
)

// histogram counts durations in log-linear buckets, as HdrHistogram does:
// exact below 128ns, and above it each power of two is split into 64
// buckets, so a value read back is at most 1/64 (1.6%) above the one
// counted, in a constant 30 KB whatever the number of values.
type histogram struct {
	counts [histBuckets]uint64
	n      uint64
	max    time.Duration
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits // exact values below it
	histHalf    = histSub / 2      // buckets per power of two above it
	histBuckets = (64-histSubBits)*histHalf + histSub
)

func histBucket(v uint64) int {
	if v < histSub {
		return int(v)
	}
	shift := bits.Len64(v) - histSubBits // >= 1
	return shift*histHalf + int(v>>shift)
}

// histUpper is the largest value bucket i counts.
func histUpper(i int) uint64 {
	if i < histSub {
		return uint64(i)
	}
	shift := i/histHalf - 1
	top := uint64(i%histHalf + histHalf)
	return (top+1)<<shift - 1
}

func (h *histogram) add(d time.Duration) {
	h.counts[histBucket(uint64(max(d, 0)))]++
	h.n++
	h.max = max(h.max, d)
}

// percentile is the nearest-rank percentile p (0 < p <= 100), as
// Percentile computes it over sorted values, to within the bucket's width
// (at most 1.6% above), never above the largest value counted. Zero for no
// values.
func (h *histogram) percentile(p float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := min(max(uint64(ceil(float64(h.n)*p/100)), 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		if seen += c; seen >= rank {
			return min(time.Duration(histUpper(i)), h.max)
		}
	}
	return h.max
}

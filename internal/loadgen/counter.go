package loadgen

import (
	"sync/atomic"

	"github.com/go-kit/kit/metrics"
)

// Counter is a go-kit Counter that sums every Add whatever the labels: the
// one number a load run wants of a client's metric, such as its attempts.
type Counter struct{ n atomic.Int64 }

var _ metrics.Counter = (*Counter)(nil)

// With implements metrics.Counter; labels are ignored.
func (c *Counter) With(...string) metrics.Counter { return c }

// Add implements metrics.Counter.
func (c *Counter) Add(delta float64) { c.n.Add(int64(delta)) }

// Value is the sum so far.
func (c *Counter) Value() int64 { return c.n.Load() }

package trimsvc

import (
	"context"
	"sync/atomic"
	"time"
)

// LoadMeter counts what load reports need: the calls in flight, and the
// time spent serving and the calls finished since it was made.
type LoadMeter struct {
	inflight atomic.Int64
	busy     atomic.Int64 // nanoseconds
	done     atomic.Int64
}

// Middleware measures the calls of the Service it wraps.
func (m *LoadMeter) Middleware() Middleware {
	return func(next Service) Service { return loadMiddleware{m: m, next: next} }
}

// Sample returns the calls in flight now, and the time spent serving and
// the calls finished so far.
func (m *LoadMeter) Sample() (inflight int64, busy time.Duration, done int64) {
	return m.inflight.Load(), time.Duration(m.busy.Load()), m.done.Load()
}

type loadMiddleware struct {
	m    *LoadMeter
	next Service
}

func (mw loadMiddleware) TrimSpace(ctx context.Context, s string) (string, error) {
	start := time.Now()
	mw.m.inflight.Add(1)
	defer func() {
		mw.m.inflight.Add(-1)
		mw.m.busy.Add(int64(time.Since(start)))
		mw.m.done.Add(1)
	}()
	return mw.next.TrimSpace(ctx, s)
}

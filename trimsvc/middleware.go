package trimsvc

import (
	"context"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/metrics"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
)

// Middleware decorates a Service.
type Middleware func(Service) Service

// LoggingMiddleware logs every failed call at info level. Successes are
// not logged: InstrumentingMiddleware counts them, and a record per call
// would cost every call its formatting (and a logger's timestamp and
// caller) even where a level filter then drops it.
func LoggingMiddleware(logger log.Logger) Middleware {
	info := level.Info(logger)
	return func(next Service) Service {
		return loggingMiddleware{info: info, next: next}
	}
}

type loggingMiddleware struct {
	info log.Logger
	next Service
}

func (mw loggingMiddleware) TrimSpace(ctx context.Context, s string) (string, error) {
	begin := time.Now()
	out, err := mw.next.TrimSpace(ctx, s)
	if err != nil {
		_ = mw.info.Log("method", "TrimSpace", "in_bytes", len(s), "err", err, "took", time.Since(begin))
	}
	return out, err
}

// InstrumentingMiddleware counts calls and observes their duration in
// seconds, labelled by method and by code, the name codeOf gives an error
// (nil included). The transport owns that naming, so the labels match the
// status codes callers see. It labels the metrics once per code (With),
// and keeps what With returns for the calls that follow.
func InstrumentingMiddleware(requests metrics.Counter, duration metrics.Histogram, codeOf func(error) string) Middleware {
	return func(next Service) Service {
		mw := &instrumentingMiddleware{requests: requests, duration: duration, codeOf: codeOf, next: next}
		mw.byCode.Store(&map[string]instruments{})
		return mw
	}
}

type instrumentingMiddleware struct {
	requests metrics.Counter
	duration metrics.Histogram
	codeOf   func(error) string
	next     Service

	// byCode holds the metrics labelled for each code seen so far: read
	// without a lock, replaced (under mu) by a copy with a new code.
	byCode atomic.Pointer[map[string]instruments]
	mu     sync.Mutex
}

// instruments are the metrics of one method and code.
type instruments struct {
	requests metrics.Counter
	duration metrics.Histogram
}

func (mw *instrumentingMiddleware) TrimSpace(ctx context.Context, s string) (string, error) {
	begin := time.Now()
	out, err := mw.next.TrimSpace(ctx, s)
	in := mw.labelled(mw.codeOf(err))
	in.requests.Add(1)
	in.duration.Observe(time.Since(begin).Seconds())
	return out, err
}

// labelled returns the metrics labelled with TrimSpace and code.
func (mw *instrumentingMiddleware) labelled(code string) instruments {
	if in, ok := (*mw.byCode.Load())[code]; ok {
		return in
	}
	mw.mu.Lock()
	defer mw.mu.Unlock()
	byCode := *mw.byCode.Load()
	if in, ok := byCode[code]; ok {
		return in
	}
	lvs := []string{"method", "TrimSpace", "code", code}
	in := instruments{requests: mw.requests.With(lvs...), duration: mw.duration.With(lvs...)}
	next := maps.Clone(byCode)
	next[code] = in
	mw.byCode.Store(&next)
	return in
}

package trimsvc

import (
	"context"
	"time"

	"github.com/go-kit/kit/metrics"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
)

// Middleware decorates a Service.
type Middleware func(Service) Service

// LoggingMiddleware logs every call: failures at info level, successes at
// debug level, so a busy instance is quiet unless asked to be verbose.
func LoggingMiddleware(logger log.Logger) Middleware {
	return func(next Service) Service {
		return loggingMiddleware{logger: logger, next: next}
	}
}

type loggingMiddleware struct {
	logger log.Logger
	next   Service
}

func (mw loggingMiddleware) TrimSpace(ctx context.Context, s string) (out string, err error) {
	defer func(begin time.Time) {
		lvl := level.Debug
		if err != nil {
			lvl = level.Info
		}
		_ = lvl(mw.logger).Log("method", "TrimSpace", "in_bytes", len(s), "out_bytes", len(out), "err", err, "took", time.Since(begin))
	}(time.Now())
	return mw.next.TrimSpace(ctx, s)
}

// InstrumentingMiddleware counts calls and observes their duration in
// seconds, labelled by method and by code, the name codeOf gives an error
// (nil included). The transport owns that naming, so the labels match the
// status codes callers see.
func InstrumentingMiddleware(requests metrics.Counter, duration metrics.Histogram, codeOf func(error) string) Middleware {
	return func(next Service) Service {
		return instrumentingMiddleware{requests: requests, duration: duration, codeOf: codeOf, next: next}
	}
}

type instrumentingMiddleware struct {
	requests metrics.Counter
	duration metrics.Histogram
	codeOf   func(error) string
	next     Service
}

func (mw instrumentingMiddleware) TrimSpace(ctx context.Context, s string) (out string, err error) {
	defer func(begin time.Time) {
		lvs := []string{"method", "TrimSpace", "code", mw.codeOf(err)}
		mw.requests.With(lvs...).Add(1)
		mw.duration.With(lvs...).Observe(time.Since(begin).Seconds())
	}(time.Now())
	return mw.next.TrimSpace(ctx, s)
}

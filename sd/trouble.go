package sd

import (
	"time"

	"github.com/go-kit/kit/metrics"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
)

// LoopOption changes how a serving instance's Consul loop
// (Registrar.KeepRegistered, LoadReporter.Run) reports its failures.
type LoopOption func(*loopOptions)

type loopOptions struct {
	failures metrics.Counter // nil: not counted
	failing  metrics.Gauge   // nil: not shown
}

func newLoopOptions(opts []LoopOption) loopOptions {
	var o loopOptions
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithFailureMetrics makes the loop add 1 to failures for every attempt
// that fails (Consul unreachable, a 403, TLS refused), and set failing to
// 1 while the loop fails, 0 once an attempt succeeds again. Either may be
// nil. Give each loop metrics (or label values) of its own.
func WithFailureMetrics(failures metrics.Counter, failing metrics.Gauge) LoopOption {
	return func(o *loopOptions) { o.failures, o.failing = failures, failing }
}

// troubleRepeat is how often a loop that goes on failing says so again.
const troubleRepeat = time.Minute

// trouble is what a serving loop knows of its failures to reach Consul,
// and how it says so: at error level when they start, every troubleRepeat
// while they go on, and once when they end; and in the metrics of
// WithFailureMetrics. It belongs to the loop's goroutine.
type trouble struct {
	what   string // what the loop cannot do, as in "cannot keep the registration"
	logger log.Logger
	opts   loopOptions
	now    func() time.Time

	since    time.Time // of the first failure in a row; zero while all is well
	attempts int       // failed in a row
	said     time.Time // when it last said so
}

func newTrouble(what string, logger log.Logger, opts loopOptions) *trouble {
	return &trouble{what: what, logger: logger, opts: opts, now: time.Now}
}

// failed records a failed attempt, err, and the wait before the next one.
func (t *trouble) failed(err error, retryIn time.Duration) {
	now := t.now()
	t.attempts++
	if t.opts.failures != nil {
		t.opts.failures.Add(1)
	}
	kv := []any{"err", err, "retry_in", retryIn.Round(time.Millisecond)}
	if permanent(err) {
		kv = append(kv, "hint", "consul refuses the ACL token or the TLS certificates: put valid ones in their files (read again when they change); the instance keeps serving meanwhile")
	}
	switch {
	case t.since.IsZero():
		t.since, t.said = now, now
		if t.opts.failing != nil {
			t.opts.failing.Set(1)
		}
		_ = level.Error(t.logger).Log(append([]any{"msg", "consul: cannot " + t.what + "; serving on and retrying"}, kv...)...)
	case now.Sub(t.said) >= troubleRepeat:
		t.said = now
		_ = level.Error(t.logger).Log(append([]any{"msg", "consul: still cannot " + t.what,
			"failing_for", now.Sub(t.since).Round(time.Second), "attempts", t.attempts}, kv...)...)
	}
}

// ok records an attempt that succeeded.
func (t *trouble) ok() {
	if t.since.IsZero() {
		return
	}
	if t.opts.failing != nil {
		t.opts.failing.Set(0)
	}
	_ = level.Info(t.logger).Log("msg", "consul: can "+t.what+" again", "failed_for", t.now().Sub(t.since).Round(time.Millisecond), "attempts", t.attempts)
	t.since, t.attempts = time.Time{}, 0
}

package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd/lb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/internal/ctxtime"
	"github.com/trimkit/trimkit/internal/overload"
)

// noEndpointsPause is how long Retry waits before trying again when the
// balancer has no endpoint, so a burst of attempts does not miss an instance
// that discovery is about to report.
const noEndpointsPause = 20 * time.Millisecond

// Retry calls instances b picks, at most cfg.MaxAttempts attempts within
// cfg.Timeout overall. Each attempt gets an equal share of the time left
// (the time left divided by the attempts left) and is cancelled when it is
// used up, so one hung instance cannot use up the whole budget. After a
// failed attempt, cfg.Retryable says whether to try again (by default
// Unavailable, no endpoints, an attempt's own share running out, a
// connection closed under the call, and a call an instance shed for
// overload; a business error in the response is a success here), and a
// call that is not idempotent (cfg.Idempotent, WithIdempotent) tries again
// only when its attempt certainly did not leave this process or was shed.
// Retries (and hedges, with cfg.HedgeAfter) must fit the retry budget: a
// call whose retry it refuses returns its failure at once. When it gives
// up, the error is a *RetryError that unwraps to the last attempt's error.
// While the instances shed calls, cfg.Throttle may refuse a call before
// its first attempt: a *ThrottledError.
//
// The attempts of a call go to distinct instances while there are any
// (Balancer.Pick). Unlike go-kit's lb.Retry, attempts run on the caller's
// goroutine (a hedge and the attempt it races are the exception) and the
// error unwraps, so status.FromError and errors.Is see the last failure.
func Retry(b Balancer, cfg RetryConfig) (endpoint.Endpoint, error) {
	if b == nil {
		return nil, errors.New("client: Retry needs a balancer")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("retry config: %w", err)
	}
	return newRetry(b, cfg.withDefaults()), nil
}

func newRetry(b Balancer, cfg RetryConfig) endpoint.Endpoint {
	r := &retry{
		b:          b,
		max:        cfg.MaxAttempts,
		timeout:    cfg.Timeout,
		hedgeAfter: cfg.HedgeAfter,
		retryable:  cfg.Retryable,
		idempotent: cfg.Idempotent,
		budget:     newBudget(cfg.Budget, time.Now),
		throttle:   newThrottle(cfg.Throttle, time.Now),
		metrics:    cfg.Metrics,
	}
	return r.call
}

type retry struct {
	b          Balancer
	max        int
	timeout    time.Duration
	hedgeAfter time.Duration
	retryable  lb.Callback
	idempotent func(request any) bool // nil: every request is
	budget     *budget                // nil: no budget
	throttle   *throttle              // nil: no throttling
	metrics    RetryMetrics
}

// DefaultRetryable is Retry's rule unless RetryConfig.Retryable says
// otherwise, in the shape of go-kit's lb.Callback: try again after no
// instance was found (lb.ErrNoEndpoints), after an attempt's own share of
// the time ran out, after an instance shed the call for overload (it did
// no work: grpcserver's admission marks such refusals), and after
// Unavailable or Canceled (a connection that failed or closed under the
// call: Retry asks only while the caller's context is live). Anything else
// is the instance's answer and ends the call. n, the attempts made so far,
// does not matter to it.
func DefaultRetryable(n int, err error) (keepTrying bool, replacement error) {
	var timeout *attemptTimeoutError
	switch {
	case errors.Is(err, lb.ErrNoEndpoints), errors.As(err, &timeout), overload.IsShed(err):
		return true, nil
	}
	return connFailure(err), nil
}

type idempotentKey struct{}

// WithIdempotent returns a context under which Retry takes a call as safe
// to send twice, or not, whatever RetryConfig.Idempotent says.
func WithIdempotent(ctx context.Context, idempotent bool) context.Context {
	return context.WithValue(ctx, idempotentKey{}, idempotent)
}

func (r *retry) isIdempotent(ctx context.Context, request any) bool {
	if v, ok := ctx.Value(idempotentKey{}).(bool); ok {
		return v
	}
	return r.idempotent == nil || r.idempotent(request)
}

// attempts is what one call has done so far.
type attempts struct {
	tried   []*Instance // the instances its attempts went to
	made    int         // attempts, those that found no endpoint included
	reached int         // attempts that went to an instance
}

func (r *retry) call(ctx context.Context, request interface{}) (interface{}, error) {
	if err := r.throttle.admit(); err != nil {
		add(r.metrics.Throttled)
		return nil, err
	}
	resp, err := r.attempts(ctx, request)
	r.throttle.done(err)
	return resp, err
}

// attempts makes the attempts of a call.
func (r *retry) attempts(ctx context.Context, request interface{}) (interface{}, error) {
	deadline := time.Now().Add(r.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	r.budget.call()
	idempotent := r.isIdempotent(ctx, request)
	var (
		triedBuf [4]*Instance
		a        = attempts{tried: triedBuf[:0]}
		last     error
		spent    bool
		unknown  bool // the last attempt may have reached its instance
	)
	for {
		n, err := r.b.Pick(a.tried)
		sent := false
		if err == nil {
			if a.reached > 0 {
				// A retry that will reach an instance: it must fit the budget.
				if !r.budget.retry() {
					spent = true
					add(r.metrics.BudgetExhausted)
					break
				}
				add(r.metrics.Retries)
			}
			a.reached++
			a.tried = append(a.tried, n)
			share := time.Until(deadline) / time.Duration(r.max-a.made)
			var resp interface{}
			if idempotent && a.made == 0 && r.hedgeAfter > 0 && r.hedgeAfter < share && r.max > 1 {
				resp, a, err = r.hedged(ctx, n, request, share, deadline, a)
			} else {
				a.made++
				resp, sent, err = r.attemptOnce(ctx, n, request, share, !idempotent)
			}
			if err == nil {
				return resp, nil
			}
		} else {
			a.made++
		}
		last = err
		if ctx.Err() != nil {
			break
		}
		keep, replacement := r.retryable(a.made, last)
		if !keep {
			// The policy's answer, not a give-up: the error (an
			// instance's answer, say) is the call's as it is.
			return nil, cmp.Or(replacement, last)
		}
		if sent && !idempotent && !overload.IsShed(last) {
			unknown = true
			break
		}
		if a.made >= r.max || !time.Now().Before(deadline) {
			break
		}
		if errors.Is(last, lb.ErrNoEndpoints) {
			pause := min(noEndpointsPause, time.Until(deadline)/time.Duration(r.max-a.made+1))
			if !ctxtime.Sleep(ctx, pause) {
				break
			}
		}
	}
	var instance string
	if len(a.tried) > 0 {
		instance = a.tried[len(a.tried)-1].instance
	}
	return nil, &RetryError{Attempts: a.made, Timeout: r.timeout, Last: last, Instance: instance, BudgetSpent: spent, OutcomeUnknown: unknown}
}

// hedged makes a call's first attempt, on n, and, if it has not answered
// after r.hedgeAfter, one more on another instance, budget permitting. The
// first answer wins and the other attempt is cancelled: the first attempt
// as outpaced (its instance was slower than a hedge that started later,
// which ejection counts against it), a hedge as merely abandoned. When both
// fail it returns the later failure.
// It takes the call's attempts so far and returns them updated (by value:
// a pointer would move the call's buffer of tried instances to the heap).
func (r *retry) hedged(ctx context.Context, n *Instance, request interface{}, share time.Duration, deadline time.Time, a attempts) (interface{}, attempts, error) {
	type result struct {
		resp  interface{}
		err   error
		hedge bool
	}
	results := make(chan result, 2) // never blocks a losing attempt
	run := func(ctx context.Context, n *Instance, share time.Duration, hedge bool) {
		resp, _, err := r.attemptOnce(ctx, n, request, share, false)
		results <- result{resp, err, hedge}
	}
	firstCtx, cancelFirst := context.WithCancelCause(ctx)
	defer cancelFirst(nil)
	hedgeCtx, cancelHedge := context.WithCancelCause(ctx)
	defer cancelHedge(nil)
	a.made++
	go run(firstCtx, n, share, false)
	inflight := 1
	timer := time.NewTimer(r.hedgeAfter)
	defer timer.Stop()
	for {
		select {
		case res := <-results:
			inflight--
			if res.err == nil {
				if res.hedge {
					cancelFirst(errOutpaced)
				} else {
					cancelHedge(errHedgeUnneeded)
				}
				return res.resp, a, nil
			}
			if inflight == 0 {
				return nil, a, res.err
			}
		case <-timer.C:
			// The timer fires once, while the first attempt (the call's
			// only one so far, of r.max > 1) is in flight.
			n2, err := r.b.Pick(a.tried)
			if err != nil || slices.Contains(a.tried, n2) {
				continue // no other instance to hedge to
			}
			if !r.budget.retry() {
				add(r.metrics.BudgetExhausted)
				continue
			}
			a.tried = append(a.tried, n2)
			add(r.metrics.Hedges)
			a.made++
			a.reached++
			inflight++
			go run(hedgeCtx, n2, time.Until(deadline)/time.Duration(r.max-a.made+1), true)
		}
	}
}

// attemptOnce calls n, cancelling the call when share is used up, and
// tells the balancer how it ended. With track, it also finds out whether
// the attempt may have left this process (sent): it did unless the
// connection's interceptor (see Factory) saw it end before a transport
// stream was made for it. Without track, or without that interceptor,
// sent is true.
func (r *retry) attemptOnce(ctx context.Context, n *Instance, request interface{}, share time.Duration, track bool) (resp interface{}, sent bool, err error) {
	// The share is enforced by a timer that cancels the attempt, not by a
	// context deadline: a deadline travels to the server as grpc-timeout and
	// costs both sides a timer context, a measurable part of a loopback call
	// (BENCHMARKS.md, raw-3conn-deadline). The caller's own deadline, if
	// any, still travels.
	actx, cancel := context.WithCancelCause(ctx)
	callCtx := context.Context(actx)
	var mark *sendMark
	if track {
		mark = &sendMark{}
		callCtx = context.WithValue(actx, sendMarkKey{}, mark)
	}
	timer := time.AfterFunc(share, func() { cancel(errAttemptTimeout) })
	resp, err = n.call(callCtx, request)
	timer.Stop()
	cancel(nil)
	if err != nil && errors.Is(context.Cause(actx), errAttemptTimeout) && ctx.Err() == nil {
		err = &attemptTimeoutError{share: share, err: err}
	}
	r.b.Done(n, err)
	return resp, mark == nil || mark.mayHaveSent(), err
}

// Causes of an attempt's cancellation, which tell the attempt's node how it
// ended (classify).
var (
	// errAttemptTimeout: the attempt used up its share of the retry timeout.
	errAttemptTimeout = errors.New("attempt's share of the retry timeout used up")
	// errOutpaced: a hedge to another instance answered first.
	errOutpaced = errors.New("a hedge to another instance answered first")
	// errHedgeUnneeded: the attempt the hedge raced answered first.
	errHedgeUnneeded = errors.New("the hedged attempt answered first")
)

// connFailure reports whether err says the instance could not be reached
// or the connection closed under the call: Unavailable, or Canceled that
// the caller did not cause (the callers check their contexts). Retry
// retries it and ejection counts it against the instance.
func connFailure(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.Canceled:
		return true
	}
	return false
}

// RetryError is what Retry returns when it gave up on a call it would
// have tried again: attempts or time used up, the retry budget spent, the
// caller's context done, or a call that is not idempotent whose attempt
// may have reached its instance. An error the policy does not retry (an
// instance's answer, such as NotFound) is returned as it is instead.
type RetryError struct {
	Attempts int
	Timeout  time.Duration
	Last     error  // the last attempt's error
	Instance string // the instance of the last attempt that reached one, "" if none did
	// BudgetSpent says the retry budget refused the retry that would have
	// come next.
	BudgetSpent bool
	// OutcomeUnknown says the call is not idempotent and its last attempt
	// may have reached its instance before failing: the call may or may not
	// have taken effect there, and was not sent again.
	OutcomeUnknown bool
}

func (e *RetryError) Error() string {
	if e.OutcomeUnknown {
		return fmt.Sprintf("attempt %d failed after it may have reached %s, and the call is not idempotent (not sent again; its outcome is unknown): %v", e.Attempts, e.Instance, e.Last)
	}
	if e.BudgetSpent {
		return fmt.Sprintf("%d attempt(s) failed and the retry budget is spent (no retry now), last: %v", e.Attempts, e.Last)
	}
	return fmt.Sprintf("%d attempt(s) within %v failed, last: %v", e.Attempts, e.Timeout, e.Last)
}

// Unwrap returns the last attempt's error.
func (e *RetryError) Unwrap() error { return e.Last }

// attemptTimeoutError marks a failure caused by an attempt's own share of
// the time running out. Its gRPC status is DeadlineExceeded, and it matches
// context.DeadlineExceeded, whatever status the cancelled call ended with.
type attemptTimeoutError struct {
	share time.Duration
	err   error
}

func (e *attemptTimeoutError) Error() string {
	return fmt.Sprintf("attempt timed out after its share of %v: %v", e.share.Round(time.Microsecond), e.err)
}

func (e *attemptTimeoutError) Unwrap() error { return e.err }

// Is makes errors.Is(err, context.DeadlineExceeded) hold.
func (e *attemptTimeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

// GRPCStatus reports DeadlineExceeded.
func (e *attemptTimeoutError) GRPCStatus() *status.Status {
	return status.New(codes.DeadlineExceeded, e.Error())
}

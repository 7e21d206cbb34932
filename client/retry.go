package client

import (
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
)

// noEndpointsPause is how long Retry waits before trying again when the
// balancer has no endpoint, so a burst of attempts does not miss an instance
// that discovery is about to report.
const noEndpointsPause = 20 * time.Millisecond

// Retry calls the endpoints of b, at most cfg.RetryMax attempts within
// cfg.RetryTimeout overall. Each attempt gets an equal share of the time
// left (the time left divided by the attempts left) and is cancelled when it
// is used up, so one hung instance cannot use up the whole budget. Only
// failures worth another attempt are retried: Unavailable, no endpoints, an
// attempt's own share running out, and a connection closed under the call;
// a business error in the response is a success here. Retries (and hedges,
// with cfg.HedgeAfter) must fit the retry budget (WithRetryBudget): a call
// whose retry it refuses returns its failure at once. When it gives up, the
// error is a *RetryError that unwraps to the last attempt's error.
//
// Over this package's Balancer, the attempts of a call go to distinct
// instances; over any other go-kit lb.Balancer, each attempt takes whatever
// b.Endpoint returns. Of the options it uses WithRetryBudget and
// WithMetrics.
//
// Unlike go-kit's lb.Retry, attempts run on the caller's goroutine (a hedge
// and the attempt it races are the exception) and the error unwraps, so
// status.FromError and errors.Is see the last failure.
func Retry(b lb.Balancer, cfg CallConfig, opts ...Option) (endpoint.Endpoint, error) {
	if b == nil {
		panic("client: Retry needs a balancer")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("retry config: %w", err)
	}
	o, err := newOptions(opts)
	if err != nil {
		return nil, fmt.Errorf("retry options: %w", err)
	}
	return newRetry(b, cfg.withDefaults(), o), nil
}

func newRetry(b lb.Balancer, cfg CallConfig, o options) endpoint.Endpoint {
	r := &retry{
		plain:      b,
		max:        cfg.RetryMax,
		timeout:    cfg.RetryTimeout,
		hedgeAfter: cfg.HedgeAfter,
		budget:     newBudget(o.budget, time.Now),
		metrics:    o.metrics,
	}
	r.ours, _ = b.(*Balancer)
	return r.call
}

type retry struct {
	plain      lb.Balancer
	ours       *Balancer // b when it is this package's, nil otherwise
	max        int
	timeout    time.Duration
	hedgeAfter time.Duration
	budget     *budget // nil: no budget
	metrics    Metrics
}

// attempts is what one call has done so far.
type attempts struct {
	seq     uint64  // the balancer's number for the call
	tried   []*node // the nodes its attempts went to
	made    int     // attempts, those that found no endpoint included
	reached int     // attempts that went to an instance
}

func (r *retry) call(ctx context.Context, request interface{}) (interface{}, error) {
	deadline := time.Now().Add(r.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	r.budget.call()
	var (
		triedBuf [4]*node
		a        = attempts{tried: triedBuf[:0]}
		last     error
		spent    bool
	)
	if r.ours != nil {
		a.seq = r.ours.next()
	}
	for {
		e, n, err := r.endpoint(a.seq, a.tried)
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
			if n != nil {
				a.tried = append(a.tried, n)
			}
			share := time.Until(deadline) / time.Duration(r.max-a.made)
			var resp interface{}
			if a.made == 0 && r.hedgeAfter > 0 && r.hedgeAfter < share && r.max > 1 {
				resp, a, err = r.hedged(ctx, e, request, share, deadline, a)
			} else {
				a.made++
				resp, err = attemptOnce(ctx, e, request, share)
			}
			if err == nil {
				return resp, nil
			}
		} else {
			a.made++
		}
		last = err
		if a.made >= r.max || !retryable(ctx, last) || !time.Now().Before(deadline) {
			break
		}
		if errors.Is(last, lb.ErrNoEndpoints) {
			pause := min(noEndpointsPause, time.Until(deadline)/time.Duration(r.max-a.made+1))
			if !ctxtime.Sleep(ctx, pause) {
				break
			}
		}
	}
	return nil, &RetryError{Attempts: a.made, Timeout: r.timeout, Last: last, BudgetSpent: spent}
}

// hedged makes a call's first attempt, on e, and, if it has not answered
// after r.hedgeAfter, one more on another instance, budget permitting. The
// first answer wins and the other attempt is cancelled: the first attempt
// as outpaced (its instance was slower than a hedge that started later,
// which ejection counts against it), a hedge as merely abandoned. When both
// fail it returns the later failure.
// It takes the call's attempts so far and returns them updated (by value:
// a pointer would move the call's buffer of tried nodes to the heap).
func (r *retry) hedged(ctx context.Context, e endpoint.Endpoint, request interface{}, share time.Duration, deadline time.Time, a attempts) (interface{}, attempts, error) {
	type result struct {
		resp  interface{}
		err   error
		hedge bool
	}
	results := make(chan result, 2) // never blocks a losing attempt
	run := func(ctx context.Context, e endpoint.Endpoint, share time.Duration, hedge bool) {
		resp, err := attemptOnce(ctx, e, request, share)
		results <- result{resp, err, hedge}
	}
	firstCtx, cancelFirst := context.WithCancelCause(ctx)
	defer cancelFirst(nil)
	hedgeCtx, cancelHedge := context.WithCancelCause(ctx)
	defer cancelHedge(nil)
	a.made++
	go run(firstCtx, e, share, false)
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
			e2, n, err := r.endpoint(a.seq, a.tried)
			if err != nil || slices.Contains(a.tried, n) {
				continue // no other instance to hedge to
			}
			if !r.budget.retry() {
				add(r.metrics.BudgetExhausted)
				continue
			}
			if n != nil {
				a.tried = append(a.tried, n)
			}
			add(r.metrics.Hedges)
			a.made++
			a.reached++
			inflight++
			go run(hedgeCtx, e2, time.Until(deadline)/time.Duration(r.max-a.made+1), true)
		}
	}
}

// endpoint is the endpoint of the next attempt, and its node when the
// balancer is this package's.
func (r *retry) endpoint(seq uint64, tried []*node) (endpoint.Endpoint, *node, error) {
	if r.ours == nil {
		e, err := r.plain.Endpoint()
		return e, nil, err
	}
	n, err := r.ours.pick(seq, tried)
	if err != nil {
		return nil, nil, err
	}
	return n.tracked, n, nil
}

// attemptOnce calls e, cancelling the call when share is used up.
func attemptOnce(ctx context.Context, e endpoint.Endpoint, request interface{}, share time.Duration) (interface{}, error) {
	// The share is enforced by a timer that cancels the attempt, not by a
	// context deadline: a deadline travels to the server as grpc-timeout and
	// costs both sides a timer context, a measurable part of a loopback call
	// (BENCHMARKS.md, raw-3conn-deadline). The caller's own deadline, if
	// any, still travels.
	actx, cancel := context.WithCancelCause(ctx)
	timer := time.AfterFunc(share, func() { cancel(errAttemptTimeout) })
	resp, err := e(actx, request)
	timer.Stop()
	cancel(nil)
	if err != nil && errors.Is(context.Cause(actx), errAttemptTimeout) && ctx.Err() == nil {
		err = &attemptTimeoutError{share: share, err: err}
	}
	return resp, err
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

// retryable reports whether err, from an attempt made under ctx, is worth
// another attempt on another instance: Unavailable, no endpoints, the
// attempt's own share running out, or a connection closed under the call
// (Canceled while the caller's ctx is live). Nothing is retried once ctx is
// done.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var timeout *attemptTimeoutError
	switch {
	case errors.Is(err, lb.ErrNoEndpoints), errors.As(err, &timeout):
		return true
	}
	return connFailure(err)
}

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

// RetryError is what Retry returns when no attempt succeeded.
type RetryError struct {
	Attempts int
	Timeout  time.Duration
	Last     error // the last attempt's error
	// BudgetSpent says the retry budget refused the retry that would have
	// come next.
	BudgetSpent bool
}

func (e *RetryError) Error() string {
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

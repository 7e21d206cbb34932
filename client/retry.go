package client

import (
	"context"
	"errors"
	"fmt"
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
// a business error in the response is a success here. When it gives up, the
// error is a *RetryError that unwraps to the last attempt's error.
//
// Over this package's Balancer, the attempts of a call go to distinct
// instances; over any other go-kit lb.Balancer, each attempt takes whatever
// b.Endpoint returns.
//
// Unlike go-kit's lb.Retry, attempts run on the caller's goroutine and the
// error unwraps, so status.FromError and errors.Is see the last failure.
func Retry(b lb.Balancer, cfg CallConfig) (endpoint.Endpoint, error) {
	if b == nil {
		panic("client: Retry needs a balancer")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("retry config: %w", err)
	}
	cfg = cfg.withDefaults()
	r := &retry{plain: b, max: cfg.RetryMax, timeout: cfg.RetryTimeout}
	r.ours, _ = b.(*Balancer)
	return r.call, nil
}

type retry struct {
	plain   lb.Balancer
	ours    *Balancer // b when it is this package's, nil otherwise
	max     int
	timeout time.Duration
}

func (r *retry) call(ctx context.Context, request interface{}) (interface{}, error) {
	deadline := time.Now().Add(r.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	var (
		seq      uint64
		triedBuf [4]*node
		tried    = triedBuf[:0] // the nodes this call's attempts went to
		last     error
		attempt  = 1
	)
	if r.ours != nil {
		seq = r.ours.next()
	}
	for ; ; attempt++ {
		e, n, err := r.endpoint(seq, tried)
		if err == nil {
			if n != nil {
				tried = append(tried, n)
			}
			var resp interface{}
			if resp, err = attemptOnce(ctx, e, request, time.Until(deadline)/time.Duration(r.max-attempt+1)); err == nil {
				return resp, nil
			}
		}
		last = err
		if attempt >= r.max || !retryable(ctx, last) || !time.Now().Before(deadline) {
			break
		}
		if errors.Is(last, lb.ErrNoEndpoints) {
			pause := min(noEndpointsPause, time.Until(deadline)/time.Duration(r.max-attempt+1))
			if !ctxtime.Sleep(ctx, pause) {
				break
			}
		}
	}
	return nil, &RetryError{Attempts: attempt, Timeout: r.timeout, Last: last}
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
	return n.e, n, nil
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

// errAttemptTimeout is the cause of an attempt cancelled at the end of its
// share.
var errAttemptTimeout = errors.New("attempt's share of the retry timeout used up")

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
}

func (e *RetryError) Error() string {
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

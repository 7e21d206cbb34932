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

// Retry calls the endpoints of b, at most maxAttempts attempts within timeout
// overall; with an AttemptBalancer (such as RoundRobin) the attempts of a
// call go to distinct endpoints. Each attempt gets an equal share of the
// time left (the time left divided by the attempts left) and is cancelled
// when it is used up, so one hung instance cannot use up the whole budget. Only failures worth another attempt are retried (see
// Retryable); a business error in the response is a success here. When it
// gives up, the error is a *RetryError that unwraps to the last attempt's
// error.
//
// A maxAttempts below 1 counts as 1.
//
// Unlike go-kit's lb.Retry, attempts run on the caller's goroutine and the
// error unwraps, so status.FromError and errors.Is see the last failure.
func Retry(maxAttempts int, timeout time.Duration, b lb.Balancer) endpoint.Endpoint {
	if b == nil {
		panic("client: Retry needs a balancer")
	}
	attempts := max(maxAttempts, 1) // at least the one attempt
	return func(ctx context.Context, request interface{}) (interface{}, error) {
		deadline := time.Now().Add(timeout)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		ab, _ := b.(AttemptBalancer)
		var start uint64
		if ab != nil {
			start = ab.Start()
		}
		var last error
		attempt := 1
		for ; ; attempt++ {
			var resp interface{}
			resp, last = tryOnce(ctx, b, ab, start, attempt-1, request, deadline, attempts-attempt+1)
			if last == nil {
				return resp, nil
			}
			if attempt >= attempts || !Retryable(ctx, last) || !time.Now().Before(deadline) {
				break
			}
			if errors.Is(last, lb.ErrNoEndpoints) {
				pause := min(noEndpointsPause, time.Until(deadline)/time.Duration(attempts-attempt+1))
				if !ctxtime.Sleep(ctx, pause) {
					break
				}
			}
		}
		return nil, &RetryError{Attempts: attempt, Timeout: timeout, Last: last}
	}
}

// tryOnce makes one attempt with its share of the time left before deadline.
// With an AttemptBalancer ab, the attempt's endpoint is the one after the
// previous attempt's; otherwise b picks.
func tryOnce(ctx context.Context, b lb.Balancer, ab AttemptBalancer, start uint64, attempt int, request interface{}, deadline time.Time, attemptsLeft int) (interface{}, error) {
	var (
		e   endpoint.Endpoint
		err error
	)
	if ab != nil {
		e, err = ab.Attempt(start, attempt)
	} else {
		e, err = b.Endpoint()
	}
	if err != nil {
		return nil, err
	}
	share := time.Until(deadline) / time.Duration(attemptsLeft)
	// The share is enforced by a timer that cancels the attempt, not by a
	// context deadline: a deadline travels to the server as grpc-timeout and
	// costs both sides a timer context, about 7% of a loopback call
	// (BENCHMARKS.md). The caller's own deadline, if any, still travels.
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

// Retryable reports whether err, from an attempt made under ctx, is worth
// another attempt on another instance: Unavailable, no endpoints, the
// attempt's own deadline, or a connection closed under the call (Canceled
// while the caller's ctx is live). Nothing is retried once ctx is done.
func Retryable(ctx context.Context, err error) bool {
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

package client

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/go-kit/kit/sd/lb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/sd"
)

// DefaultRetryable retries each kind of failure another instance may not
// have, and nothing an instance answered.
func TestDefaultRetryable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"no endpoints", lb.ErrNoEndpoints, true},
		{"no instances, as sd explains it", &sd.NoInstancesError{Service: "s", Where: "consul", Err: lb.ErrNoEndpoints}, true},
		{"no endpoints, wrapped", fmt.Errorf("pick: %w", lb.ErrNoEndpoints), true},
		{"an attempt's share ran out", &attemptTimeoutError{share: time.Millisecond, err: status.Error(codes.Canceled, "context canceled")}, true},
		{"an attempt's share ran out, as DeadlineExceeded", &attemptTimeoutError{share: time.Millisecond, err: status.Error(codes.DeadlineExceeded, "x")}, true},
		{"unavailable", status.Error(codes.Unavailable, "connection refused"), true},
		{"unavailable, with a hint", &hintError{err: status.Error(codes.Unavailable, "error reading server preface: EOF"), hint: "TLS?"}, true},
		{"unavailable, wrapped", fmt.Errorf("call: %w", status.Error(codes.Unavailable, "x")), true},
		{"connection closed under the call", status.Error(codes.Canceled, "grpc: the client connection is closing"), true},

		{"invalid argument", status.Error(codes.InvalidArgument, "x"), false},
		{"internal", status.Error(codes.Internal, "x"), false},
		{"resource exhausted", status.Error(codes.ResourceExhausted, "x"), false},
		{"unimplemented", status.Error(codes.Unimplemented, "x"), false},
		{"the caller's deadline", status.Error(codes.DeadlineExceeded, "x"), false},
		{"context deadline", context.DeadlineExceeded, false},
		{"a plain error", errors.New("x"), false},
	} {
		for _, n := range []int{1, 2, 10} {
			keep, replacement := DefaultRetryable(n, tc.err)
			if keep != tc.want || replacement != nil {
				t.Errorf("%s (n %d): want %v and no replacement, have %v, %v", tc.name, n, tc.want, keep, replacement)
			}
		}
	}
}

// RetryConfig's defaults: DefaultRetryable among them.
func TestRetryConfigWithDefaults(t *testing.T) {
	c := RetryConfig{}.withDefaults()
	if c.MaxAttempts != DefaultMaxAttempts || c.Timeout != DefaultRetryTimeout || c.Retryable == nil || c.Budget != DefaultRetryBudget {
		t.Errorf("defaults: %+v", c)
	}
	if keep, _ := c.Retryable(1, status.Error(codes.Unavailable, "x")); !keep {
		t.Error("the default Retryable does not retry Unavailable")
	}
	mine := func(int, error) (bool, error) { return false, nil }
	if c := (RetryConfig{Retryable: mine}).withDefaults(); c.Retryable == nil {
		t.Error("a Retryable of one's own was dropped")
	} else if keep, _ := c.Retryable(1, status.Error(codes.Unavailable, "x")); keep {
		t.Error("a Retryable of one's own was replaced by the default")
	}
}

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

	"github.com/trimkit/trimkit/internal/defaults"
	"github.com/trimkit/trimkit/internal/overload"
	"github.com/trimkit/trimkit/sd"
)

// DefaultRetryable retries each kind of failure another instance may not
// have (an instance failure, a shed call), and nothing an instance
// answered.
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
		{"internal", status.Error(codes.Internal, "x"), true},
		{"unknown", status.Error(codes.Unknown, "x"), true},
		{"data loss", status.Error(codes.DataLoss, "x"), true},
		{"a deadline the instance ran into", status.Error(codes.DeadlineExceeded, "x"), true},
		{"a context deadline of the endpoint's own", context.DeadlineExceeded, true},
		{"a plain error: Unknown", errors.New("x"), true},
		{"shed for overload", overload.NewMarker().Shed("busy"), true},

		{"invalid argument", status.Error(codes.InvalidArgument, "x"), false},
		{"not found", status.Error(codes.NotFound, "x"), false},
		{"failed precondition", status.Error(codes.FailedPrecondition, "x"), false},
		{"permission denied", status.Error(codes.PermissionDenied, "x"), false},
		{"aborted", status.Error(codes.Aborted, "x"), false},
		{"resource exhausted, not shed", status.Error(codes.ResourceExhausted, "x"), false},
		{"unimplemented", status.Error(codes.Unimplemented, "x"), false},
	} {
		for _, n := range []int{1, 2, 10} {
			keep, replacement := DefaultRetryable(n, tc.err)
			if keep != tc.want || replacement != nil {
				t.Errorf("%s (n %d): want %v and no replacement, have %v, %v", tc.name, n, tc.want, keep, replacement)
			}
		}
	}
}

// RetryConfig's defaults. Retryable stays nil: Retry then goes by each
// attempt's class, the Endpointer's classification.
func TestRetryConfigWithDefaults(t *testing.T) {
	c := RetryConfig{}.withDefaults()
	if c.MaxAttempts != defaults.MaxAttempts || c.Timeout != defaults.RetryTimeout || c.Retryable != nil || c.Budget != DefaultRetryBudget {
		t.Errorf("defaults: %+v", c)
	}
	mine := func(int, error) (bool, error) { return false, nil }
	if c := (RetryConfig{Retryable: mine}).withDefaults(); c.Retryable == nil {
		t.Error("a Retryable of one's own was dropped")
	} else if keep, _ := c.Retryable(1, status.Error(codes.Unavailable, "x")); keep {
		t.Error("a Retryable of one's own was replaced by the default")
	}
}

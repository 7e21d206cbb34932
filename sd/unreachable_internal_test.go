package sd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"syscall"
	"testing"

	"github.com/hashicorp/consul/api"
)

// A query that could not reach the agent at all, and only such a query,
// is unreachable.
func TestUnreachableErrors(t *testing.T) {
	dial := func(err error) error {
		return &url.Error{Op: "Get", URL: "http://h:1/v1/x", Err: &net.OpError{Op: "dial", Net: "tcp", Err: err}}
	}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{dial(syscall.ECONNREFUSED), true},
		{dial(errors.New("i/o timeout")), true},
		{&url.Error{Op: "Get", URL: "http://nope.invalid:8500/", Err: &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "nope.invalid", IsNotFound: true}}}, true},
		{&net.DNSError{Err: "no such host", Name: "nope.invalid"}, true},
		{fmt.Errorf("wrapped: %w", syscall.EHOSTUNREACH), true},
		// The agent was there: not unreachable.
		{&url.Error{Op: "Get", URL: "http://h:1/", Err: &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}}, false},
		{api.StatusError{Code: 500, Body: "rpc error"}, false},
		{&permissionError{Answer: "ACL not found"}, false},
		{context.Canceled, false},
		{errors.New("connection refused"), false}, // text alone says nothing
	} {
		u := unreachable(tc.err)
		if u != tc.want {
			t.Errorf("%v: unreachable %v, want %v", tc.err, u, tc.want)
		}
	}
}

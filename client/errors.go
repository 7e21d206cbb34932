package client

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/sd"
)

// NoInstancesError says that a call found no instance to try: which service
// and tags were searched in which Consul, and what discovery last said. It
// unwraps to the call's error (and so to lb.ErrNoEndpoints) and has the gRPC
// status Unavailable.
type NoInstancesError struct {
	Service    string
	Tags       []string
	ConsulAddr string
	Discovery  error // the last Consul query's error, nil if it succeeded
	Err        error
}

func (e *NoInstancesError) Error() string {
	var b strings.Builder
	var (
		filtered *sd.FilteredError
		denied   *sd.PermissionError
	)
	if errors.As(e.Discovery, &filtered) || errors.As(e.Discovery, &denied) || errors.Is(e.Discovery, sd.ErrNoLeader) {
		// Not a missing service: say what is wrong first.
		fmt.Fprintf(&b, "consul at %s: %v; so no instance of service %q", e.ConsulAddr, e.Discovery, e.Service)
		if len(e.Tags) > 0 {
			fmt.Fprintf(&b, " with tags %q", e.Tags)
		}
		fmt.Fprintf(&b, " to call: %v", e.Err)
		return b.String()
	}
	fmt.Fprintf(&b, "no passing instance of service %q", e.Service)
	if len(e.Tags) > 0 {
		fmt.Fprintf(&b, " with tags %q", e.Tags)
	}
	fmt.Fprintf(&b, " in consul at %s", e.ConsulAddr)
	if e.Discovery != nil {
		fmt.Fprintf(&b, " (consul query failed: %v)", e.Discovery)
	}
	fmt.Fprintf(&b, ": %v", e.Err)
	return b.String()
}

// Unwrap returns the call's error.
func (e *NoInstancesError) Unwrap() error { return e.Err }

// GRPCStatus reports Unavailable, as a caller of a gRPC service expects.
func (e *NoInstancesError) GRPCStatus() *status.Status {
	return status.New(codes.Unavailable, e.Error())
}

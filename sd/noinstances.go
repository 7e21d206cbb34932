package sd

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// NoInstancesError says that a call found no instance to try: which service
// and tags were searched where, and what discovery last said. Instancer
// and the client's DNS discovery make it (NoInstances), and the client stack returns it
// for a call that found no instance. It unwraps to the call's error (and
// so to lb.ErrNoEndpoints) and has the gRPC status Unavailable.
type NoInstancesError struct {
	Service   string
	Tags      []string
	Where     string // "consul at 127.0.0.1:8500", say
	Discovery error  // the last query's error, nil if it succeeded
	Err       error
	// Hint, when set, says what to do about it, after the rest: an
	// Instancer sets one on the first error whose Discovery is an
	// *UnreachableError.
	Hint string
}

func (e *NoInstancesError) Error() string {
	var b strings.Builder
	e.write(&b)
	if e.Hint != "" {
		b.WriteString("; " + e.Hint)
	}
	return b.String()
}

func (e *NoInstancesError) write(b *strings.Builder) {
	var (
		filtered *filteredError
		denied   *permissionError
	)
	unreachable := errors.As(e.Discovery, new(*UnreachableError))
	if unreachable || errors.As(e.Discovery, &filtered) || errors.As(e.Discovery, &denied) || errors.Is(e.Discovery, errNoLeader) {
		// Not a missing service: say what is wrong first. When the agent
		// is missing, its error names it.
		what, known := fmt.Sprintf("%s: %v", e.Where, e.Discovery), "to call"
		if unreachable {
			what, known = e.Discovery.Error(), "is known"
		}
		fmt.Fprintf(b, "%s; so no instance of service %q", what, e.Service)
		if len(e.Tags) > 0 {
			fmt.Fprintf(b, " with tags %q", e.Tags)
		}
		fmt.Fprintf(b, " %s: %v", known, e.Err)
		return
	}
	fmt.Fprintf(b, "no passing instance of service %q", e.Service)
	if len(e.Tags) > 0 {
		fmt.Fprintf(b, " with tags %q", e.Tags)
	}
	fmt.Fprintf(b, " in %s", e.Where)
	if e.Discovery != nil {
		fmt.Fprintf(b, " (its last query failed: %v)", e.Discovery)
	}
	fmt.Fprintf(b, ": %v", e.Err)
}

// Unwrap returns the call's error.
func (e *NoInstancesError) Unwrap() error { return e.Err }

// GRPCStatus reports Unavailable, as a caller of a gRPC service expects.
func (e *NoInstancesError) GRPCStatus() *status.Status {
	return status.New(codes.Unavailable, e.Error())
}

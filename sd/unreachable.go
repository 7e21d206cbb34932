package sd

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"syscall"
)

// UnreachableError says that a query could not reach the Consul agent at
// all: its connection was refused, its name did not resolve, its dial
// failed. An Instancer's query fails with it (the Event's
// Err, NoInstancesError.Discovery).
type UnreachableError struct {
	Addr string // the agent's address, a URL such as http://127.0.0.1:8500
	Err  error  // the query's error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("Consul could not be reached at %s: %v", e.Addr, dialCause(e.Err))
}

// Unwrap returns the query's error.
func (e *UnreachableError) Unwrap() error { return e.Err }

// unreachable reports whether err, a failed request to the agent, failed
// to reach it at all: a dial that failed (refused, timed out, no route),
// or a name that did not resolve. A connection that broke during a query
// is not: the next query finds out whether the agent is still there.
func unreachable(err error) bool {
	var (
		op  *net.OpError
		dns *net.DNSError
	)
	if errors.As(err, &op) && op.Op == "dial" || errors.As(err, &dns) {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH)
}

// dialCause is the part of err that says why the agent could not be
// reached, such as "dial tcp 127.0.0.1:8500: connect: connection refused",
// without the query's URL around it.
func dialCause(err error) error {
	var (
		op  *net.OpError
		dns *net.DNSError
	)
	switch {
	case errors.As(err, &op):
		return op
	case errors.As(err, &dns):
		return dns
	}
	return err
}

// agentAddr is the address of the agent that client talks to, for
// messages: the one it was made with, else the scheme and host of the URL
// err failed on, else "the agent's address".
func agentAddr(client Client, err error) string {
	if a, ok := client.(interface{ Address() string }); ok && a.Address() != "" {
		return a.Address()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil && u.Host != "" {
			return u.Scheme + "://" + u.Host
		}
	}
	return "the agent's address"
}

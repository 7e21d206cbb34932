// Package client is the importable trimsvc client: an sd.Instancer that
// watches Consul, an Endpointer that keeps one gRPC connection per instance
// (made by Factory), a Balancer (NewRoundRobin or NewP2C) and Retry, put
// together by New into a *Client that implements trimsvc.Service.
//
// The pieces are exported so that a program can build the same stack over
// any go-kit sd.Instancer (sd.FixedInstancer in tests, its own discovery):
// NewFromInstancer does it in one call, or compose NewEndpointer, Factory,
// a Balancer and Retry yourself. Config says where to find the service and,
// in its CallConfig, how to call it; Validate is its one check. Options set
// the rest: logger, dial options, ejection, retry budget, metrics.
//
// Failures that are worth another attempt on another instance are retried:
// Unavailable, no endpoints, an attempt's own share of the time running
// out, and a connection closed under a call because its instance left.
// Business errors such as trimsvc.ErrInputTooLarge (InvalidArgument) return
// after one attempt. The error a call returns keeps its gRPC status:
// status.FromError and errors.Is work on it.
//
// The stack is built for gray failure, the instance that is slow, stalls,
// hangs, dies or is overloaded while Consul's check still passes: balancers
// prefer instances whose connection is READY; instances that keep failing
// are ejected (Ejection) and probed back with a health check; NewP2C weighs
// latency and load; retries and hedges (CallConfig.HedgeAfter) fit a
// RetryBudget; and Metrics report what happened.
package client

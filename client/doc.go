// Package client is the importable trimsvc client: a Consul Instancer, an
// Endpointer that keeps one gRPC connection per instance (made by Factory),
// a round-robin balancer and Retry, put together by New into a *Client that
// implements trimsvc.Service.
//
// The pieces are exported so that a program can build the same stack over
// any go-kit sd.Instancer (sd.FixedInstancer in tests, its own discovery):
// see NewFromInstancer, NewEndpointer, Factory and Retry.
//
// Failures that are worth another attempt on another instance are retried:
// Unavailable, no endpoints, an attempt's own deadline, and a connection
// closed under a call because its instance left. Business errors such as
// trimsvc.ErrInputTooLarge (InvalidArgument) return after one attempt. The
// error a call returns keeps its gRPC status: status.FromError and errors.Is
// work on it.
package client

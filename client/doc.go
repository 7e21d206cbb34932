// Package client is a resilient client stack for any gRPC service whose
// instances are found through Consul (or any go-kit sd.Instancer): an
// Endpointer that keeps one gRPC connection per instance, a Balancer that
// picks an instance for each attempt, and Retry, which makes the attempts
// of a call within a time limit and a retry budget.
//
// New builds the whole stack in one call from a Config (where the service
// is in Consul, and how to call it) and an EndpointFunc, which turns one
// connection into the endpoint callers call, typically over the service's
// generated client. NewFromInstancer does the same over any Instancer.
// The pieces are exported to be composed by hand or wrapped: an Instancer,
// NewEndpointer with Factory, a Balancer (NewRoundRobin, NewP2C,
// NewLeastLoaded, or one of your own that wraps them), and Retry.
//
// Failures that are worth another attempt on another instance are retried
// (DefaultRetryable; RetryConfig.Retryable changes the rule): Unavailable,
// no endpoints, an attempt's own share of the time running out, and a
// connection closed under a call because its instance left. A call that
// is not safe to send twice (RetryConfig.Idempotent, WithIdempotent) is
// never hedged, and retried only when its attempt did not leave this
// process. The error a call returns keeps its gRPC status:
// status.FromError and errors.Is work on it.
//
// The stack is built for gray failure, the instance that is slow, stalls,
// hangs, dies or is overloaded while Consul's check still passes: balancers
// prefer instances whose connection is READY; instances that keep failing
// are ejected (Ejection) and probed back with a health check; P2C weighs
// latency and load; retries and hedges (RetryConfig.HedgeAfter) fit a
// RetryBudget; and Metrics and RetryMetrics report what happened.
//
// The package knows nothing of any one service: the trim service's typed
// client (transport.NewTrimClient) is built on it, as any service's can be.
package client

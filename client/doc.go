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
// One classification of failed attempts (Class, set by Ejection.Classify;
// DefaultClassify by default) serves ejection, the balancers and Retry:
// an instance failure (Internal, Unknown, DataLoss, Unavailable, a
// DeadlineExceeded the instance returned, a connection closed under the
// call, an attempt's own share of the time running out) is retried on
// another instance and counts against its instance; an answer (NotFound,
// InvalidArgument and the other codes of the application's) ends the call
// as a success would for the instance; a call shed for overload is
// retried and costs its instance load, not health. A call that is not
// safe to send twice (RetryConfig.Idempotent, WithIdempotent) is never
// hedged, and retried only when its attempt did not leave this process.
// The error a call returns keeps its gRPC status: status.FromError and
// errors.Is work on it.
//
// The stack is built for gray failure, the instance that is slow, stalls,
// hangs, dies, fails every call or is overloaded while Consul's check
// still passes: balancers prefer instances whose connection is READY;
// instances that fail where their peers do not, in a row or by success
// rate, are ejected (Ejection) and probed back with a health check; P2C weighs
// latency and load; retries and hedges (RetryConfig.HedgeAfter) fit a
// RetryBudget; and Metrics report what happened.
//
// The package knows nothing of any one service: the trim service's typed
// client (trim.NewClient) is built on it, as any service's can be.
package client

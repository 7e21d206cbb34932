// Package overload is what an instance tells its callers about its load,
// and how they read it: the load it reports in the trailer of each answer
// to a caller that asks for it (RequestKey), and the mark of a call it
// shed.
//
// The load is gRPC's ORCA per-call format, an xds.data.orca.v3
// OrcaLoadReport in the "endpoint-load-metrics-bin" trailer, as grpc-go's
// orca package and Envoy read it. Only two fields are written, and only
// they are read: application_utilization (the instance's calls in flight
// over its concurrency limit) and the named metric "concurrency_limit".
// They are encoded by hand (protowire), not with the generated xds types:
// the server and the client stay free of the xds module, and an answer's
// report costs one small buffer.
//
// A shed call fails with ResourceExhausted and a google.rpc.ErrorInfo
// detail whose reason is "OVERLOADED": the instance refused it before
// reading its request, so it did no work and may go to another instance,
// idempotent or not. Other ResourceExhausted failures (a message too
// large) carry no such detail.
package overload

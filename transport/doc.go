// Package transport binds the trim service's endpoints to gRPC with go-kit's
// transport/grpc: a server that serves pb.TrimServer and a client that turns a
// gRPC connection back into trimsvc endpoints.
//
// Errors cross the wire as gRPC statuses. Status owns the mapping from
// service errors to codes (with an ErrorInfo detail naming the service error),
// and the client maps a status back, so errors.Is(err,
// trimsvc.ErrInputTooLarge) holds on the caller's side while status.FromError
// still yields the original status.
package transport

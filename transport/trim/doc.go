// Package trim binds the trim service to gRPC: NewGRPCServer serves
// its endpoints as a pb.TrimServer with go-kit's transport/grpc Server, and
// NewGRPCClient turns a gRPC connection back into a TrimSpace endpoint (with
// a direct Invoke rather than go-kit's transport/grpc Client; see
// NewGRPCClient) whose TrimResponse also names the instance that answered.
//
// Errors cross the wire as gRPC statuses. One table (serviceErrors) maps
// each service error to a code and to an ErrorInfo detail that names it, and
// the client maps a status back, so errors.Is(err, trimsvc.ErrInputTooLarge)
// holds on the caller's side while status.FromError still yields the
// original status.
package trim

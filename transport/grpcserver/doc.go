// Package grpcserver runs a gRPC server, whatever service it serves, as a
// well-behaved instance of a fleet.
//
// Instance owns the instance's life in one order: serve; health
// NOT_SERVING until the service is ready, then SERVING; register in Consul
// (sd.Registrar) and keep registered; and on the way out, NOT_SERVING,
// deregister, drain, and a graceful stop bounded in time. Instance.Run is
// the one place in trimkit that calls GracefulStop.
//
// Limits bound what callers can cost the server: the size of a request,
// the streams per connection and in flight across the server, the
// streaming calls open, the connections, idle ones and their keepalive
// pings, and the time a handshake may take. Limits.NewServer makes the
// server (Limits.ServerOptions gives its grpc.ServerOptions, for a server
// without streaming calls), Limits.Listener the connection limit. TLS
// serves TLS or mutual TLS from files that may be rotated on disk.
//
// It imports nothing of the trim service: any gRPC server can use it.
package grpcserver

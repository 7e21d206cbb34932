// Package grpcserver bounds what callers can cost a gRPC server, whatever
// service it serves: the size of a request, the streams per connection and
// in flight across the server, the connections, idle ones and their
// keepalive pings, and the time a handshake may take. Limits.ServerOptions
// gives the grpc.ServerOptions, Limits.Listener the connection limit.
//
// It imports nothing of the trim service: any gRPC server can use it.
package grpcserver

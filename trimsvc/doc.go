// Package trimsvc is the trim service: its Service interface, the
// implementation, the go-kit endpoints that carry its requests and responses,
// and the logging and instrumenting middlewares that wrap it.
//
// The package knows nothing of gRPC or Consul; package trim (transport/trim) binds the
// endpoints to gRPC and package sd registers a running instance in Consul.
package trimsvc

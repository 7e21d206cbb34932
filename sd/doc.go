// Package sd connects trimkit to Consul service discovery.
//
// Registrar is the life of one service instance in Consul: Register when the
// instance is ready (with a native gRPC health check and
// DeregisterCriticalServiceAfter), KeepRegistered while it runs, so that an
// agent that restarted and forgot it learns it again, and Deregister before
// it stops. Unlike go-kit's sd/consul Registrar, every method returns its
// error instead of only logging it.
package sd

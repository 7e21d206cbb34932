// Package sd connects trimkit to Consul service discovery, on both sides.
//
// Instancer is the caller's side: a go-kit sd.Instancer that watches the
// passing instances of a service with blocking queries on the health API,
// keeps the instances known last while Consul cannot be reached, and whose
// Stop cancels the query in flight (go-kit's sd/consul Instancer does not).
//
// Registrar is the service's side, the life of one instance in Consul:
// Register when the instance is ready (with a native gRPC health check and
// DeregisterCriticalServiceAfter), KeepRegistered while it runs, so that an
// agent that restarted and forgot it learns it again, and Deregister before
// it stops. Unlike go-kit's sd/consul Registrar, every method returns its
// error instead of only logging it. A Registration needs only a name, an
// address and a port: its ID and check timings have defaults. Advertise
// finds the address to register for a listener. A program does not call
// the Registrar's methods itself: grpcserver.Instance runs them, in order,
// around its server.
//
// Both talk to Consul through Client, the few calls they make, so that
// their logic can be tested against a fake. ConsulConfig.NewClient makes
// the one Client they all take (a LoadReporter's and a LoadWatcher's too),
// which reads a rotated ACL token file or TLS file again without a
// restart; NewClient adapts a Consul API client of the program's own. A serving
// instance never ends itself over Consul: KeepRegistered and
// LoadReporter.Run retry whatever fails, say so loudly and count it
// (WithFailureMetrics); only the first registration (Register) gives up at once on
// an error that retrying cannot cure: a missing ACL permission, an unknown
// token, TLS that does not verify.
package sd

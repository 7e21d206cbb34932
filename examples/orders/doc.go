// Package orders is an example of a gRPC service of your own built with
// trimkit's exported packages only (client, sd, transport/grpcserver):
// nothing of the trim service, nothing internal. Its Orders service has an
// idempotent method, GetOrder, and one that is not, CreateOrder, which
// creates a new order on every call; the client stack retries the first
// freely and the second only when its attempt certainly never left the
// caller, so no order is created twice. A CreateOrder that may have
// reached an instance that then failed fails too: its outcome is unknown.
//
//   - server (examples/orders/server) is the quick start of a server:
//     grpcserver.Limits on a grpc.Server and its listener, an
//     sd.Registration and Registrar, and grpcserver.Instance, which
//     serves, registers, keeps registered and, on SIGTERM or SIGINT,
//     leaves Consul, drains and stops without losing a call.
//   - client (examples/orders/client) is the quick start of a caller:
//     client.New with Endpoints (this service's client.EndpointFunc) and
//     Idempotent (its RetryConfig.Idempotent).
//
// This package holds what both share: Server, the service (an in-memory
// store, one per instance), Endpoints and Idempotent.
//
// `make up` leaves a Consul dev agent running (and three trimsvc
// instances, which this example ignores) and prints the agent's address,
// as in "UI http://127.0.0.1:PORT/ui". Point the commands at it with
// CONSUL_HTTP_ADDR (or -consul-addr; 127.0.0.1:8500 by default), and give
// the servers a short check interval, so that Consul finds them passing
// within a second rather than ten:
//
//	export CONSUL_HTTP_ADDR=http://127.0.0.1:PORT
//	go run ./examples/orders/server -check-interval 1s &
//	go run ./examples/orders/server -check-interval 1s &
//	go run ./examples/orders/client -n 10
//	kill %1 %2 # SIGTERM: each leaves Consul, drains, stops
//	make down
//
// The test in this directory runs three servers against a real agent
// under load, stops one with SIGTERM and kills another with SIGKILL, and
// checks from the servers' ledgers (-ledger) that no CreateOrder was sent
// twice.
package orders

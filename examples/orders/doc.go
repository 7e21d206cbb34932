// Package orders is an example of a gRPC service of your own built with
// trimkit's exported packages only (client, sd, transport/grpcserver):
// nothing of the trim service, nothing internal. Its Orders service has an
// idempotent method, GetOrder, and one that is not, CreateOrder, which
// creates a new order on every call; the client stack retries the first
// freely and the second only when its attempt certainly never left the
// caller, so no order is created twice. A CreateOrder that may have
// reached an instance that then failed fails too: its outcome is unknown.
// WatchOrders is a server-streaming method: each order the instance
// creates, until the caller cancels or the instance leaves.
//
//   - server (examples/orders/server) is the quick start of a server:
//     grpcserver.Limits on a grpc.Server and its listener, an
//     sd.Registration and Registrar, and grpcserver.Instance, which
//     serves, registers, keeps registered and, on SIGTERM or SIGINT,
//     leaves Consul, drains and stops without losing a call.
//   - client (examples/orders/client) is the quick start of a caller:
//     client.New with Endpoints (this service's client.EndpointFunc) and
//     Idempotent (its RetryConfig.Idempotent); with -watch, one
//     ClientConn of client.NewConn and the generated client, following
//     new orders through Watch.
//
// This package holds what both share: Server, the service (an in-memory
// store, one per instance), Endpoints, Idempotent, and Watch, which keeps
// a WatchOrders stream open, on another instance when one leaves or
// fails.
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
// The tests in this directory run servers against a real agent under
// load. One stops a server with SIGTERM and kills another with SIGKILL,
// and checks from the servers' ledgers (-ledger) that no CreateOrder was
// sent twice. The other calls through one ClientConn with streams open
// while servers get SIGTERM, SIGKILL and SIGSTOP: no GetOrder fails, and
// only the streams on the killed or frozen instance do, each opened again
// elsewhere.
package orders

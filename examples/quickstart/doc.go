// Package quickstart holds the README's quick starts as whole programs:
// server, an instance of the orders example service registered in Consul
// in one call (grpcserver.Serve), and client, the client stack calling it.
// They are examples, not library; the test here runs both against a real
// Consul agent.
package quickstart

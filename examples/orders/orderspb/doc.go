// Package orderspb holds orders.proto, the wire contract of the orders
// example's gRPC service, and the Go code protoc generates from it.
// Regenerate with `make proto`; never edit the generated files by hand.
package orderspb

// Package pb holds trim.proto, the wire contract of the Trim gRPC service,
// and the Go code protoc generates from it. Regenerate with `make proto`;
// never edit the generated files by hand.
package pb

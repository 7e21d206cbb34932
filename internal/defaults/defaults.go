// Package defaults holds the defaults that trimkit's library packages and
// its commands share, so that a command's -help and the library it
// configures cannot disagree. The library documents each one where its
// zero value stands for it.
package defaults

import "time"

const (
	// ConsulAddr is the agent a Consul client reaches when neither its
	// configuration nor CONSUL_HTTP_ADDR names one.
	ConsulAddr = "127.0.0.1:8500"
	// DNSAddr is a local Consul agent's DNS interface.
	DNSAddr = "127.0.0.1:8600"
	// MaxAttempts is how many attempts a call makes at most, the first
	// included.
	MaxAttempts = 3
	// RetryTimeout bounds a call, all its attempts together.
	RetryTimeout = 500 * time.Millisecond
)

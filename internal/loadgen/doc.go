// Package loadgen sends load through a trim endpoint and summarises it:
// requests, failures, req/s, latency percentiles and the requests each
// instance answered. cmd/client prints its Summary; cmd/demo reads it back.
package loadgen

// Package loadgen sends load through a trim endpoint and summarises it:
// requests, failures, req/s, latency percentiles, the requests each
// instance answered, and when the failures happened (calls and failures
// by second, the first and the last failure). cmd/client prints its
// Summary; cmd/trimdev reads it back, and its chaos soak prints a Timeline.
package loadgen

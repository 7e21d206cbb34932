// Package paired compares the time two ways of doing the same work take,
// on a machine whose speed drifts: in pairs of short blocks, one of each
// way a few milliseconds apart, so that the drift moves both blocks of a
// pair alike and cancels in their ratio. The benchmarks of the call
// overhead (internal/bench) and of Retry's share (client) use it.
package paired

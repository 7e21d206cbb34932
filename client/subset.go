package client

import (
	"cmp"
	"hash/fnv"
	"slices"
)

// subsetOrder is the order in which the caller numbered caller takes
// instances for a subset of size: its subset is the first size, and while
// some of those are unhealthy it extends into the ones that follow.
//
// It is deterministic subsetting (Google's SRE book, chapter 20) laid out
// on a ring, as Finagle's deterministic aperture is: the instances are
// ordered by a hash of their address, the same in every process, and
// caller c's subset is the size instances from position c×size on, around
// the ring. Callers numbered 0, 1, 2, … thus lay their subsets end to end,
// lap after lap: every instance is in the subsets of as many callers as
// any other, give or take one, whatever the number of callers. An instance
// that joins or leaves shifts the positions after it by one, and the
// starts of the callers past the first lap by one per lap: a subset
// changes by an instance or two (the SRE book's reshuffle per round
// changes most of them whenever the number of rounds does). With size 0
// or at least len(instances), it is every instance.
func subsetOrder(instances []string, size int, caller uint64) []string {
	type keyed struct {
		hash uint64
		inst string
	}
	ring := make([]keyed, len(instances))
	for i, inst := range instances {
		ring[i] = keyed{ringHash(inst), inst}
	}
	slices.SortFunc(ring, func(a, b keyed) int {
		return cmp.Or(cmp.Compare(a.hash, b.hash), cmp.Compare(a.inst, b.inst))
	})
	n := uint64(len(ring))
	start := 0
	if size > 0 && n > 0 && uint64(size) < n {
		start = int(caller % n * (uint64(size) % n) % n)
	}
	order := make([]string, 0, len(ring))
	for i := range ring {
		order = append(order, ring[(start+i)%len(ring)].inst)
	}
	return order
}

// ringHash places an instance on the ring: FNV-1a of its address, mixed
// (SplitMix64's finalizer) so that neighbouring addresses scatter.
func ringHash(inst string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(inst))
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

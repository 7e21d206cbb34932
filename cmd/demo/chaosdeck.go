package main

import (
	"math/rand/v2"
	"slices"
	"time"
)

// faultKind is a kind of fault the chaos soak injects.
type faultKind string

// The kinds of fault, as the soak prints them.
const (
	instanceKill   faultKind = "instance-sigkill"
	instanceTerm   faultKind = "instance-sigterm"
	instanceStop   faultKind = "instance-sigstop"
	serverKill     faultKind = "server-sigkill"
	leaderKill     faultKind = "leader-sigkill"
	client1Restart faultKind = "client-1-restart"
	client2Restart faultKind = "client-2-restart"
	instanceToken  faultKind = "instance-token"
	callerToken    faultKind = "caller-token"
)

// faultKinds are every kind, in the order the summary lists them.
func faultKinds() []faultKind {
	return []faultKind{instanceKill, instanceTerm, instanceStop, serverKill, leaderKill,
		client1Restart, client2Restart, instanceToken, callerToken}
}

// fault is one fault as drawn: its kind and every random choice it may
// need. Each fault draws the same values whatever its kind, so that a seed
// replays the same sequence of faults and choices.
type fault struct {
	kind faultKind
	// target picks the instance (modulo the instances) or the non-leader
	// server (modulo the servers that do not lead then).
	target int
	// hold is how long an instance stays frozen, or a killed member down
	// before it starts again.
	hold time.Duration
	// gap is the least time from this fault's start to the next one's.
	gap time.Duration
}

// Bounds of the drawn durations.
const (
	minHold, maxHold = time.Second, 4 * time.Second
	minGap, maxGap   = 6 * time.Second, 10 * time.Second
)

// deck deals faults: every kind once per round, in an order shuffled
// afresh each round, so that every kind is hit about as often as any
// other (each at least n times once n rounds are dealt).
type deck struct {
	rng   *rand.Rand
	kinds []faultKind
	round []faultKind // what is left of this round
}

func newDeck(seed uint64, kinds []faultKind) *deck {
	return &deck{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), kinds: kinds}
}

// next deals the next fault.
func (d *deck) next() fault {
	if len(d.round) == 0 {
		d.round = slices.Clone(d.kinds)
		d.rng.Shuffle(len(d.round), func(i, j int) { d.round[i], d.round[j] = d.round[j], d.round[i] })
	}
	f := fault{kind: d.round[0]}
	d.round = d.round[1:]
	f.target = d.rng.IntN(1 << 20)
	f.hold = minHold + time.Duration(d.rng.Int64N(int64(maxHold-minHold)))
	f.gap = minGap + time.Duration(d.rng.Int64N(int64(maxGap-minGap)))
	return f
}

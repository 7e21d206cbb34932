package main

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
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

	// Faults of a datacenter, with two (-dcs 2): every instance of dc1
	// killed (the load's calls fail over to dc2), every instance of dc2
	// killed, dc2's servers killed, and the WAN link cut (dc2's servers
	// frozen: dc1's servers reach no server of dc2).
	dc1InstancesKill faultKind = "dc1-instances-sigkill"
	dc2InstancesKill faultKind = "dc2-instances-sigkill"
	dc2ServersKill   faultKind = "dc2-servers-sigkill"
	wanCut           faultKind = "wan-cut"

	// Compound faults: two at once, the second starting while the first
	// is under way, or several back to back with no recovery between.
	serverAgent    faultKind = "server-sigkill+client-1-restart"
	leaderInstance faultKind = "leader-sigkill+instance-sigkill"
	instanceAgent  faultKind = "instance-sigkill+client-1-restart"
	backToBack     faultKind = "back-to-back"
)

// singleKinds are the faults of one member each.
func singleKinds() []faultKind {
	return []faultKind{instanceKill, instanceTerm, instanceStop, serverKill, leaderKill,
		client1Restart, client2Restart, instanceToken, callerToken}
}

// datacenterKinds are the faults of a whole datacenter, or of the link
// between two, with two datacenters.
func datacenterKinds() []faultKind {
	return []faultKind{dc1InstancesKill, dc2InstancesKill, dc2ServersKill, wanCut}
}

// faultKinds are every kind of one datacenter, in the order the summary
// lists them.
func faultKinds() []faultKind { return deckKinds(1) }

// deckKinds are every kind for dcs datacenters, in the order the summary
// lists them: with two, the single faults (on dc1's members) and those of
// a datacenter, then the compound ones.
func deckKinds(dcs int) []faultKind {
	kinds := singleKinds()
	if dcs > 1 {
		kinds = append(kinds, datacenterKinds()...)
	}
	return append(kinds, serverAgent, leaderInstance, instanceAgent, backToBack)
}

// singlesOf are the single faults among kinds: all but the compound ones.
func singlesOf(kinds []faultKind) []faultKind {
	var singles []faultKind
	for _, k := range kinds {
		if _, overlapping := overlaps[k]; !overlapping && k != backToBack {
			singles = append(singles, k)
		}
	}
	return singles
}

// kindNames are kinds as strings.
func kindNames(kinds []faultKind) []string {
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = string(k)
	}
	return names
}

// overlaps are the compound kinds of two faults at once: the first, then
// the second a lag later, while the first is under way.
var overlaps = map[faultKind][2]faultKind{
	serverAgent:    {serverKill, client1Restart},
	leaderInstance: {leaderKill, instanceKill},
	instanceAgent:  {instanceKill, client1Restart},
}

// overlapNames lists the overlapping pairs, in the order faultKinds does.
func overlapNames() string {
	var names []string
	for _, k := range faultKinds() {
		if pair, ok := overlaps[k]; ok {
			names = append(names, fmt.Sprintf("%s while %s", pair[1], pair[0]))
		}
	}
	return strings.Join(names, ", ")
}

// backToBackLen is how many faults a back-to-back fault injects.
const backToBackLen = 3

// fault is one fault as drawn: its kind and every random choice it may
// need. Each fault draws the same values whatever its kind, so that a seed
// replays the same sequence of faults and choices.
type fault struct {
	kind faultKind
	// target picks the instance (modulo the instances) or the non-leader
	// server (modulo the servers that do not lead then).
	target int
	// hold is how long an instance stays frozen, or a killed member down
	// before it starts again (the WAN link stays cut wanCutFactor times
	// as long).
	hold time.Duration
	// gap is the least time from this fault's start to the next one's.
	gap time.Duration
	// parts are a compound fault's faults, lag how long after the first
	// an overlapping second starts.
	parts []fault
	lag   time.Duration
	// step is the walkthrough's step a fault of the walkthrough sequence
	// runs (1-based), noRecover that the next starts at once.
	step      int
	noRecover bool
}

// Sequences of faults: a deck of every kind, shuffled, or the walkthrough.
const (
	sequenceDeck        = "deck"
	sequenceWalkthrough = "walkthrough"
)

// walkFaults deals the walkthrough's steps, but its load, in order, round
// after round: each step at once after the last, as a user types them,
// and the cluster recovered after the last.
func walkFaults() func() fault {
	steps := walkSteps()
	var runnable []int
	for i, st := range steps {
		if !slices.ContainsFunc(st.cmds, func(c walkCmd) bool { return c.load }) {
			runnable = append(runnable, i+1)
		}
	}
	i := 0
	return func() fault {
		step := runnable[i%len(runnable)]
		i++
		last := i%len(runnable) == 0
		return fault{kind: faultKind(fmt.Sprintf("walkthrough-%d", step)), step: step, noRecover: !last, gap: minGap}
	}
}

// Bounds of the drawn durations.
const (
	minHold, maxHold = time.Second, 4 * time.Second
	minGap, maxGap   = 6 * time.Second, 10 * time.Second
	maxLag           = time.Second
)

// wanCutFactor is how many times its drawn hold the WAN link stays cut
// (5s to 20s): long enough for dc1's calls into dc2 (the callers' watch of
// dc2) to time out, the server RPC's 7s hold included, and for the WAN
// gossip to suspect dc2's servers.
const wanCutFactor = 5

// deck deals faults: every kind once per round, in an order shuffled
// afresh each round, so that every kind is hit about as often as any
// other (each at least n times once n rounds are dealt).
type deck struct {
	rng     *rand.Rand
	kinds   []faultKind
	singles []faultKind // of kinds, what a back-to-back fault draws from
	round   []faultKind // what is left of this round
}

func newDeck(seed uint64, kinds []faultKind) *deck {
	return &deck{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), kinds: kinds, singles: singlesOf(kinds)}
}

// next deals the next fault.
func (d *deck) next() fault {
	if len(d.round) == 0 {
		d.round = slices.Clone(d.kinds)
		d.rng.Shuffle(len(d.round), func(i, j int) { d.round[i], d.round[j] = d.round[j], d.round[i] })
	}
	kind := d.round[0]
	d.round = d.round[1:]
	f := d.draw(kind)
	if pair, ok := overlaps[kind]; ok {
		f.parts = []fault{d.draw(pair[0]), d.draw(pair[1])}
	}
	if kind == backToBack {
		for range backToBackLen {
			f.parts = append(f.parts, d.draw(d.singles[d.rng.IntN(len(d.singles))]))
		}
	}
	return f
}

// draw draws the choices of a fault of kind.
func (d *deck) draw(kind faultKind) fault {
	f := fault{kind: kind}
	f.target = d.rng.IntN(1 << 20)
	f.hold = minHold + time.Duration(d.rng.Int64N(int64(maxHold-minHold)))
	f.gap = minGap + time.Duration(d.rng.Int64N(int64(maxGap-minGap)))
	f.lag = time.Duration(d.rng.Int64N(int64(maxLag)))
	return f
}

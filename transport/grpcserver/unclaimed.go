package grpcserver

import (
	"sync"
	"time"
)

// sweepEvery is how soon after its stream ends the place of a call that
// never reached an interceptor comes back.
const sweepEvery = 20 * time.Millisecond

// unclaimed holds the tickets that tap gave out until the call's
// interceptor claims them, so that the place of a call that never reaches
// one (an unknown method, a request that never arrived whole) comes back
// once its stream has ended. A table under a mutex and one timer, armed
// while the table holds a ticket, cost a call two short critical
// sections; context.AfterFunc on each call's context cost it three
// allocations and about 2µs of a server's 90µs per call under ghz
// (BENCHMARKS.md, "The server").
type unclaimed struct {
	mu    sync.Mutex
	slots []*ticket // nil: free, its index in free
	free  []int32
	timer *time.Timer
	armed bool
}

// add holds t until claim.
func (u *unclaimed) add(t *ticket) {
	u.mu.Lock()
	if n := len(u.free); n > 0 {
		t.slot = u.free[n-1]
		u.free = u.free[:n-1]
		u.slots[t.slot] = t
	} else {
		t.slot = int32(len(u.slots))
		u.slots = append(u.slots, t)
	}
	if !u.armed {
		u.armed = true
		u.timer.Reset(sweepEvery)
	}
	u.mu.Unlock()
}

// claim takes t out of the table, if it is still there: its interceptor
// gives it back from now on.
func (u *unclaimed) claim(t *ticket) {
	u.mu.Lock()
	if t.slot >= 0 {
		u.remove(t)
	}
	u.mu.Unlock()
}

// remove frees t's slot; u.mu is held.
func (u *unclaimed) remove(t *ticket) {
	u.slots[t.slot] = nil
	u.free = append(u.free, t.slot)
	t.slot = -1
}

// sweep gives back the tickets whose stream has ended, and runs again
// while tickets are left.
func (u *unclaimed) sweep() {
	var ended []*ticket
	u.mu.Lock()
	for _, t := range u.slots {
		if t != nil && t.Context.Err() != nil {
			u.remove(t)
			ended = append(ended, t)
		}
	}
	u.armed = len(u.slots) > len(u.free) // tickets left
	if u.armed {
		u.timer.Reset(sweepEvery)
	}
	u.mu.Unlock()
	for _, t := range ended {
		t.giveBack()
	}
}

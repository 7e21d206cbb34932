package client

import (
	"math"
	"sync"
	"time"
)

// watchdog cancels attempts that outlive their share of a call's time,
// with one timer for all of a Retry's attempts instead of one each. A
// timer of its own per attempt (time.AfterFunc) cost each call two
// allocations and, when it was the earliest timer of its P, a wake-up of
// the network poller: about 2µs of a 150µs loopback call
// (BENCHMARKS.md, "The call path"). Here an attempt takes a slot in a
// table under a mutex; the one timer is armed for the earliest deadline
// and re-armed only when an attempt's deadline comes before it, which
// with a steady share is never: the attempts that start later end later.
// When the timer fires it cancels the attempts past their deadline and
// re-arms for the earliest left, if any; an attempt that ended leaves a
// stale deadline behind at most once, costing one scan.
type watchdog struct {
	mu    sync.Mutex
	slots []watched
	free  []int32
	timer *time.Timer
	armed int64 // when the timer fires, ns since epoch; math.MaxInt64: not armed
	epoch time.Time
}

// watched is one attempt in flight: when its share ends (ns since the
// watchdog's epoch; 0: a free slot) and how to cancel it.
type watched struct {
	deadline int64
	attempt  canceler
}

// canceler is what the watchdog ends: an attempt's record.
type canceler interface{ cancel(cause error) }

func newWatchdog() *watchdog {
	w := &watchdog{armed: math.MaxInt64, epoch: time.Now()}
	w.timer = time.AfterFunc(time.Duration(math.MaxInt64), w.fire)
	w.timer.Stop()
	return w
}

// watch cancels an attempt with cause errAttemptTimeout once share has
// passed since now, unless release(slot) comes first.
func (w *watchdog) watch(now time.Time, share time.Duration, attempt canceler) (slot int32) {
	deadline := int64(now.Sub(w.epoch) + share)
	w.mu.Lock()
	if n := len(w.free); n > 0 {
		slot = w.free[n-1]
		w.free = w.free[:n-1]
	} else {
		slot = int32(len(w.slots))
		w.slots = append(w.slots, watched{})
	}
	w.slots[slot] = watched{deadline: max(deadline, 1), attempt: attempt}
	if deadline < w.armed {
		w.armed = deadline
		w.timer.Reset(time.Duration(deadline) - time.Since(w.epoch))
	}
	w.mu.Unlock()
	return slot
}

// release ends the watch of slot's attempt.
func (w *watchdog) release(slot int32) {
	w.mu.Lock()
	w.slots[slot] = watched{}
	w.free = append(w.free, slot)
	w.mu.Unlock()
}

// fire cancels the attempts whose share is over and re-arms the timer for
// the earliest deadline left.
func (w *watchdog) fire() {
	w.mu.Lock()
	now := int64(time.Since(w.epoch))
	next := int64(math.MaxInt64)
	var buf [16]canceler
	expire := buf[:0]
	for i := range w.slots {
		s := &w.slots[i]
		switch {
		case s.deadline == 0:
		case s.deadline <= now:
			// Cancelled once: the slot stays taken until the attempt
			// releases it.
			expire = append(expire, s.attempt)
			s.deadline = math.MaxInt64
		default:
			next = min(next, s.deadline)
		}
	}
	w.armed = next
	if next != math.MaxInt64 {
		w.timer.Reset(time.Duration(next - now))
	}
	w.mu.Unlock()
	for _, a := range expire {
		a.cancel(errAttemptTimeout)
	}
}

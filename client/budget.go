package client

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// RetryBudget bounds retries and hedges to a fraction of calls, as
// Finagle's RetryBudget does, so that a fleet in trouble is not sent
// MaxAttempts times its load: over any TTL, retries and hedges may number at
// most Ratio (a fraction: 0.2 is 20%) of the calls made plus MinPerSecond for each second of TTL
// (the floor lets a quiet client still retry). A call whose retry the
// budget refuses returns its failure at once, saying so. The zero value of
// each field means its default: Ratio 0.2, MinPerSecond 10, TTL 10s
// (Finagle's).
type RetryBudget struct {
	Disabled     bool
	Ratio        float64
	MinPerSecond float64
	TTL          time.Duration
}

// defaultRetryBudget is Finagle's: 20% of calls plus 10 a second, over 10s.
var defaultRetryBudget = RetryBudget{Ratio: 0.2, MinPerSecond: 10, TTL: 10 * time.Second}

func (b RetryBudget) validate() error {
	var errs []error
	if b.Ratio < 0 {
		errs = append(errs, fmt.Errorf("RetryBudget.Ratio %v: must not be negative", b.Ratio))
	}
	if b.MinPerSecond < 0 {
		errs = append(errs, fmt.Errorf("RetryBudget.MinPerSecond %v: must not be negative", b.MinPerSecond))
	}
	if b.TTL < 0 || (b.TTL > 0 && b.TTL < time.Second) || b.TTL > time.Minute {
		errs = append(errs, fmt.Errorf("RetryBudget.TTL %v: must be within [1s, 1m]", b.TTL))
	}
	return errors.Join(errs...)
}

func (b RetryBudget) withDefaults() RetryBudget {
	d := defaultRetryBudget
	if b.Ratio == 0 {
		b.Ratio = d.Ratio
	}
	if b.MinPerSecond == 0 {
		b.MinPerSecond = d.MinPerSecond
	}
	if b.TTL == 0 {
		b.TTL = d.TTL
	}
	return b
}

// budget is a RetryBudget at work: calls and retries counted over the
// TTL. A mutex, not atomics: one short critical section per call, and
// exact counts.
type budget struct {
	cfg RetryBudget
	mu  sync.Mutex
	w   window // a: calls, b: retries
}

func newBudget(cfg RetryBudget, now func() time.Time) *budget {
	if cfg.Disabled {
		return nil
	}
	return &budget{cfg: cfg, w: newWindow(cfg.TTL, now)}
}

// call counts a call that started at start (the call's own reading of
// the clock, so that counting it reads none). A nil budget counts
// nothing.
func (b *budget) call(start time.Time) {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.w.atOrNow(start).a++
	b.mu.Unlock()
}

// retry reports whether one more retry or hedge fits the budget, and
// counts it if so. A nil budget always allows.
func (b *budget) retry() bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.w.current()
	calls, retries := b.w.sums()
	allowed := b.cfg.Ratio*float64(calls) + b.cfg.MinPerSecond*b.cfg.TTL.Seconds()
	if float64(retries+1) > allowed {
		return false
	}
	s.b++
	return true
}

// windowSlots is how many slices a window is counted in: an old count
// leaves the window a slice at a time.
const windowSlots = 10

// window counts two things over a sliding span of time, in windowSlots
// slots, the oldest reused once it has left the span. Its owner locks it.
type window struct {
	slot  time.Duration
	now   func() time.Time
	start time.Time // slots count from here, on the monotonic clock
	slots [windowSlots]windowSlot
}

// windowSlot is what one slot counted; epoch says which slot of time
// since window.start it is.
type windowSlot struct{ epoch, a, b int64 }

func newWindow(span time.Duration, now func() time.Time) window {
	return window{slot: span / windowSlots, now: now, start: now()}
}

// current returns the slot of now, emptied first if it last counted an
// epoch that has left the window.
func (w *window) current() *windowSlot { return w.at(w.now()) }

// at returns the slot of the epoch t falls in, emptied first if it last
// counted an epoch that has left the window; nil if that slot already
// counts a later epoch (t was read a whole window before).
func (w *window) at(t time.Time) *windowSlot {
	epoch := w.epoch(t)
	s := &w.slots[epoch%windowSlots]
	switch {
	case s.epoch < epoch:
		*s = windowSlot{epoch: epoch}
	case s.epoch > epoch:
		return nil
	}
	return s
}

// atOrNow is at(t), or the current slot when t's has been reused for a
// later epoch: a call is counted by the reading of the clock it started
// with (one that lasted longer than the window, in the slot of now).
func (w *window) atOrNow(t time.Time) *windowSlot {
	if s := w.at(t); s != nil {
		return s
	}
	return w.current()
}

// epoch is the slot of time since w.start that t falls in.
func (w *window) epoch(t time.Time) int64 { return int64(t.Sub(w.start) / w.slot) }

// sums returns the counts of the window: its last windowSlots epochs up
// to now's.
func (w *window) sums() (a, b int64) {
	epoch := w.current().epoch
	for _, o := range w.slots {
		if o.epoch > epoch-windowSlots {
			a += o.a
			b += o.b
		}
	}
	return a, b
}

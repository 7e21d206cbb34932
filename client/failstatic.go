package client

import (
	"errors"
	"fmt"
	"time"

	"github.com/go-kit/log/level"
	"google.golang.org/grpc/connectivity"
)

// FailStatic is what an Endpointer does when one update of discovery
// removes all of its instances, or most of them, at once: the catalog
// emptied by a Consul agent that restarted (a client agent that leaves
// gracefully takes every service on its node out of the catalog until it
// is back), not a fleet that died between two updates. The Endpointer then
// holds the removed instances it has evidence for, those whose connection
// is READY, that are not ejected and whose last attempts succeeded, as a
// tier below every listed instance, so that callers keep being served by
// instances that are alive on connections they hold (Envoy's panic
// threshold and kratos' refusal of an empty list do the same with less
// evidence). A held instance leaves when discovery lists it again (back
// in its tier, its scores intact), when its connection leaves READY (its
// process died, or it drained and closed it), when one attempt on it fails,
// or when MaxAge has passed since the update that removed it.
//
// Instances removed a few at a time (a deregistration, a drain) leave at
// once, as they always do, and an update that removes every instance when
// none is alive on a connection still leaves the caller with the "no
// passing instance" error at once: holding needs evidence.
//
// The zero value of each field means its default (DefaultFailStatic's).
type FailStatic struct {
	// Disabled obeys discovery to the letter: every removed instance
	// leaves at once.
	Disabled bool
	// Fraction: an update that removes more than this fraction of the
	// instances listed before it, or all of them, removes them en masse.
	// Within (0, 1]; 1 holds instances only when every one is removed.
	Fraction float64
	// MaxAge bounds how long an instance is held after the update that
	// removed it.
	MaxAge time.Duration
}

// DefaultFailStatic holds instances when an update removes more than half
// of them (Envoy's default panic threshold), for at most three minutes:
// longer than a Consul agent takes to restart and sync (seconds) or a
// cluster to elect a leader, short enough that a service really taken down
// in one step is let go of soon even by a caller whose connections to it
// somehow stay up.
var DefaultFailStatic = FailStatic{Fraction: 0.5, MaxAge: 3 * time.Minute}

func (f FailStatic) validate() error {
	var errs []error
	if f.Fraction < 0 || f.Fraction > 1 {
		errs = append(errs, fmt.Errorf("FailStatic.Fraction %v: must be within (0, 1]", f.Fraction))
	}
	if f.MaxAge < 0 {
		errs = append(errs, fmt.Errorf("FailStatic.MaxAge %v: must not be negative", f.MaxAge))
	}
	return errors.Join(errs...)
}

func (f FailStatic) withDefaults() FailStatic {
	if f.Fraction == 0 {
		f.Fraction = DefaultFailStatic.Fraction
	}
	if f.MaxAge == 0 {
		f.MaxAge = DefaultFailStatic.MaxAge
	}
	return f
}

// enMasse reports whether an update that removes removed of the known
// instances listed before it removes them en masse.
func (f FailStatic) enMasse(removed, known int) bool {
	if f.Disabled || removed == 0 {
		return false
	}
	return removed == known || float64(removed) > f.Fraction*float64(known)
}

// holdable reports whether n shows it is alive: its connection READY (or
// of a kind the Endpointer cannot follow), it answered, and it is neither
// ejected nor on probation, nor has an attempt failed since its last
// answer. e.mu is held.
func holdable(n *Instance) bool {
	return connectivity.State(n.state.Load()) == connectivity.Ready && n.ewma.Load() != 0 &&
		!n.ejected && !n.probation.Load() && n.failures.Load() == 0
}

// hold keeps the removed instances that are alive as a tier below the
// listed ones, when they were removed en masse, and returns the others.
// The caller rebuilds the members. e.mu is held.
func (e *Endpointer) hold(removed []*Instance, known int) []*Instance {
	if !e.failStatic.enMasse(len(removed), known) {
		return removed
	}
	var gone []*Instance
	before := len(e.held)
	for _, n := range removed {
		if !holdable(n) {
			gone = append(gone, n)
			continue
		}
		n.held.Store(true)
		n.heldUntil = time.Now().Add(e.failStatic.MaxAge)
		e.held[n.instance] = n
	}
	if len(e.held) == before {
		return gone
	}
	if e.heldTimer == nil {
		e.heldTimer = time.AfterFunc(e.failStatic.MaxAge, e.expireHeld)
		add(e.metrics.FailStatic)
		_ = level.Warn(e.logger).Log("msg", "discovery removed most instances at once; holding those alive on their connections until it lists them again",
			"removed", len(removed), "of", known, "held", len(e.held), "for_at_most", e.failStatic.MaxAge)
	}
	e.setHeldGauge()
	return gone
}

// release lets the held instance n go: its connection closes after the
// grace period. The caller then calls heldChanged. e.mu is held.
func (e *Endpointer) release(n *Instance) {
	delete(e.held, n.instance)
	n.held.Store(false)
	e.letGo(n)
}

// heldChanged rebuilds the members after held instances left, updates the
// gauge, and logs the end of holding, because of why, when the last one
// left. e.mu is held.
func (e *Endpointer) heldChanged(why string) {
	e.membersChanged()
	e.setHeldGauge()
	if len(e.held) > 0 || e.heldTimer == nil {
		return
	}
	e.heldTimer.Stop()
	e.heldTimer = nil
	_ = level.Info(e.logger).Log("msg", "holding no instance against discovery any more", "last_left_because", why, "listed", len(e.order))
}

func (e *Endpointer) setHeldGauge() {
	if e.metrics.Held != nil {
		e.metrics.Held.Set(float64(len(e.held)))
	}
}

// pruneHeld lets go of the held instances that no longer show they are
// alive. e.mu is held.
func (e *Endpointer) pruneHeld() {
	pruned := false
	for _, n := range e.held {
		if !holdable(n) {
			e.release(n)
			pruned = true
		}
	}
	if pruned {
		e.heldChanged("connection not ready or attempt failed")
	}
}

// expireHeld lets go of the held instances whose time is up, and waits for
// the next to expire.
func (e *Endpointer) expireHeld() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed || e.heldTimer == nil {
		return
	}
	now := time.Now()
	var next time.Time
	for _, n := range e.held {
		if !now.Before(n.heldUntil) {
			e.release(n)
		} else if next.IsZero() || n.heldUntil.Before(next) {
			next = n.heldUntil
		}
	}
	if !next.IsZero() {
		e.heldTimer.Reset(next.Sub(now))
	}
	e.heldChanged("held for " + e.failStatic.MaxAge.String())
	e.publish()
}

// failedHeld lets go of the held instance n, an attempt on which failed.
func (e *Endpointer) failedHeld(n *Instance) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed || e.held[n.instance] != n {
		return
	}
	e.release(n)
	e.heldChanged("an attempt failed")
	e.publish()
}

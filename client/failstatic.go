package client

import (
	"errors"
	"fmt"
	"time"

	"github.com/go-kit/log/level"
	"google.golang.org/grpc/connectivity"
)

// FailStatic is what an Endpointer does when discovery removes all of its
// instances, or most of them, within a short time: the catalog emptied by
// a Consul agent that restarted, not a fleet that died. A client agent
// that leaves gracefully takes every service on its node out of the
// catalog in one update; one that comes back, or restarts without
// leaving, registers its services again one at a time, each failing its
// health check until the check first runs, so the catalog drops them in
// as many updates. Either way, once the instances listed have fallen
// below 1-Fraction of the most listed within the last Window, the
// Endpointer holds the instances removed within that Window that it has
// evidence for, those whose connection is READY, that are not ejected and
// whose last attempts succeeded, as a tier below every listed instance,
// so that callers keep being served by instances that are alive on
// connections they hold (Envoy's panic threshold and kratos' refusal of
// an empty list do the same with less evidence). A held instance leaves
// when discovery lists it again (back in its tier, its scores intact),
// when its connection leaves READY (its process died, or it drained and
// closed it), when one attempt on it fails, or when MaxAge has passed
// since it was held.
//
// Instances removed a few at a time while others stay (a deregistration,
// a drain, a rolling deploy that replaces them) leave at once, as they
// always do, and an update that removes every instance when none is alive
// on a connection still leaves the caller with the "no passing instance"
// error at once: holding needs evidence. The connection of an instance
// that left stays open for the Window (or the close grace, if longer), so
// that it can still be held, and taken back if discovery lists it again.
//
// The zero value of each field means its default: Fraction 0.5, MaxAge
// 3m, Window 5s.
type FailStatic struct {
	// Disabled obeys discovery to the letter: every removed instance
	// leaves at once.
	Disabled bool
	// Fraction: an update that leaves fewer than 1-Fraction of the most
	// instances listed within the Window, or none, removes them en masse.
	// Within (0, 1]; 1 holds instances only when every one is removed.
	Fraction float64
	// MaxAge bounds how long an instance is held after the update that
	// removed it.
	MaxAge time.Duration
	// Window is how far back removals count together: an agent's
	// services come back one at a time within a second or two of it.
	Window time.Duration
}

// defaultFailStatic holds instances when fewer than half of them are left
// listed (Envoy's default panic threshold), for at most three minutes:
// longer than a Consul agent takes to restart and sync (seconds) or a
// cluster to elect a leader, short enough that a service really taken down
// in one step is let go of soon even by a caller whose connections to it
// somehow stay up. Removals within 5s count together: an agent
// registers its services again milliseconds apart, and a caller's watch
// may see each as an update of its own.
var defaultFailStatic = FailStatic{Fraction: 0.5, MaxAge: 3 * time.Minute, Window: 5 * time.Second}

func (f FailStatic) validate() error {
	var errs []error
	if f.Fraction < 0 || f.Fraction > 1 {
		errs = append(errs, fmt.Errorf("FailStatic.Fraction %v: must be within (0, 1]", f.Fraction))
	}
	if f.MaxAge < 0 {
		errs = append(errs, fmt.Errorf("FailStatic.MaxAge %v: must not be negative", f.MaxAge))
	}
	if f.Window < 0 {
		errs = append(errs, fmt.Errorf("FailStatic.Window %v: must not be negative (0 means the default, %v)", f.Window, defaultFailStatic.Window))
	}
	return errors.Join(errs...)
}

func (f FailStatic) withDefaults() FailStatic {
	if f.Fraction == 0 {
		f.Fraction = defaultFailStatic.Fraction
	}
	if f.MaxAge == 0 {
		f.MaxAge = defaultFailStatic.MaxAge
	}
	if f.Window == 0 {
		f.Window = defaultFailStatic.Window
	}
	return f
}

// enMasse reports whether an update that leaves listed instances listed,
// after peak were listed at most within the Window, removes them en
// masse.
func (f FailStatic) enMasse(listed, peak int) bool {
	if f.Disabled || listed >= peak {
		return false
	}
	return listed == 0 || float64(listed) < (1-f.Fraction)*float64(peak)
}

// holdable reports whether n shows it is alive: its connection READY (or
// of a kind the Endpointer cannot follow), it answered, and it is neither
// ejected nor on probation, nor has an attempt failed since its last
// answer. e.mu is held.
func holdable(n *Node) bool {
	return connectivity.State(n.state.Load()) == connectivity.Ready && n.ewma.Load() != 0 &&
		!n.ejected && !n.probation.Load() && n.failures.Load() == 0
}

// hold keeps the removed instances that are alive as a tier below the
// listed ones, and returns the others. The caller rebuilds the members.
// e.mu is held.
func (e *Endpointer) hold(removed []*Node, peak int) []*Node {
	var gone []*Node
	before := len(e.held.nodes)
	for _, n := range removed {
		if !holdable(n) {
			gone = append(gone, n)
			continue
		}
		n.held.Store(true)
		n.heldUntil = time.Now().Add(e.failStatic.MaxAge)
		e.held.nodes[n.instance] = n
	}
	if len(e.held.nodes) == before {
		return gone
	}
	if e.held.timer == nil {
		e.held.timer = time.AfterFunc(e.failStatic.MaxAge, e.expireHeld)
		add(e.metrics.FailStatic)
		_ = level.Warn(e.logger).Log("msg", "discovery removed most instances within a short time; holding those alive on their connections until it lists them again",
			"listed", len(e.order), "of_recently", peak, "held", len(e.held.nodes), "for_at_most", e.failStatic.MaxAge)
	}
	e.setHeldGauge()
	return gone
}

// holding is an Endpointer's fail-static state (see FailStatic), guarded
// by its lock: what this file's methods own.
type holding struct {
	// nodes are instances discovery removed en masse that the Endpointer
	// keeps while they show they are alive; timer runs while it holds any.
	nodes map[string]*Node
	timer *time.Timer
	// recent are the instances discovery removed within the Window that
	// were not held, peak the most listed within it.
	recent map[string]leftRecently
	peak   []peakListed // by band
}

// peakListed is the most instances listed within the fail-static Window.
type peakListed struct {
	n  int
	at time.Time // when n were last listed
}

// see updates the peak with listed, the instances listed until now.
func (p *peakListed) see(listed int, now time.Time, window time.Duration) {
	if listed >= p.n || now.Sub(p.at) > window {
		p.n, p.at = listed, now
	}
}

// leftRecently is an instance discovery removed within the Window and did
// not hold: its connection stays open until its timer closes it, so that
// it can still be held, or taken back if discovery lists it again.
type leftRecently struct {
	n     *Node
	timer *time.Timer // the graceCloser timer of its connection, never nil
}

// takeBack takes the instance inst, which left recently, out of its
// closing, and returns it; nil when it did not leave recently or its
// connection is already closing. e.mu is held.
func (e *Endpointer) takeBack(inst string) *Node {
	r, ok := e.held.recent[inst]
	if !ok {
		return nil
	}
	delete(e.held.recent, inst)
	if !e.closer.cancel(r.timer) {
		return nil // its connection is closing
	}
	return r.n
}

// removeSome lets the removed instances go, or holds those alive when the
// update removed them en masse (see FailStatic), with those that left
// recently; each band (datacenter) on its own. before and after are the
// instances listed before and after the update. e.mu is held.
func (e *Endpointer) removeSome(removed, before, after []*Node) {
	if len(e.held.peak) != len(e.bands.listed) {
		e.held.peak = make([]peakListed, len(e.bands.listed))
	}
	if len(e.held.peak) == 1 {
		e.removeInBand(removed, len(before), len(after), 0)
		return
	}
	for band := range e.held.peak {
		in := func(n *Node) bool { return int(n.band.Load()) == band }
		e.removeInBand(filterNodes(removed, in), countNodes(before, in), countNodes(after, in), band)
	}
}

func filterNodes(nodes []*Node, keep func(*Node) bool) []*Node {
	var out []*Node
	for _, n := range nodes {
		if keep(n) {
			out = append(out, n)
		}
	}
	return out
}

func countNodes(nodes []*Node, count func(*Node) bool) int {
	c := 0
	for _, n := range nodes {
		if count(n) {
			c++
		}
	}
	return c
}

// removeInBand is removeSome for the instances of one band, which listed
// listedBefore instances before the update and listed after it.
func (e *Endpointer) removeInBand(removed []*Node, listedBefore, listed, band int) {
	now := time.Now()
	peak := &e.held.peak[band]
	peak.see(listedBefore, now, e.failStatic.Window)
	if len(removed) > 0 && e.failStatic.enMasse(listed, peak.n) {
		for inst, r := range e.held.recent {
			if int(r.n.band.Load()) != band {
				continue
			}
			if n := e.takeBack(inst); n != nil {
				removed = append(removed, n)
			}
		}
		for _, n := range e.hold(removed, peak.n) {
			e.letGo(n)
		}
		return
	}
	if e.failStatic.Disabled {
		for _, n := range removed {
			e.letGo(n)
		}
		return
	}
	linger := max(e.grace, e.failStatic.Window)
	for _, n := range removed {
		if t := e.lingerThenClose(n, linger); t != nil {
			e.held.recent[n.instance] = leftRecently{n: n, timer: t}
		}
	}
}

// lingerThenClose lets n, which left, go after d, when its connection
// closes and it is no longer recent; until then it can still be held, or
// taken back. e.mu is held.
func (e *Endpointer) lingerThenClose(n *Node, d time.Duration) *time.Timer {
	return e.letGoAfter(n, d, func(t *time.Timer) {
		e.mu.Lock()
		defer e.mu.Unlock()
		if r, ok := e.held.recent[n.instance]; ok && r.timer == t {
			delete(e.held.recent, n.instance)
		}
	})
}

// release lets the held instance n go: its connection closes after the
// grace period. The caller then calls heldChanged. e.mu is held.
func (e *Endpointer) release(n *Node) {
	delete(e.held.nodes, n.instance)
	n.held.Store(false)
	e.letGo(n)
}

// heldChanged rebuilds the members after held instances left, updates the
// gauge, and logs the end of holding, because of why, when the last one
// left. e.mu is held.
func (e *Endpointer) heldChanged(why string) {
	e.membersChanged()
	e.setHeldGauge()
	if len(e.held.nodes) > 0 || e.held.timer == nil {
		return
	}
	e.held.timer.Stop()
	e.held.timer = nil
	_ = level.Info(e.logger).Log("msg", "holding no instance against discovery any more", "last_left_because", why, "listed", len(e.order))
}

func (e *Endpointer) setHeldGauge() {
	if e.metrics.Held != nil {
		e.metrics.Held.Set(float64(len(e.held.nodes)))
	}
}

// pruneHeld lets go of the held instances that no longer show they are
// alive. e.mu is held.
func (e *Endpointer) pruneHeld() {
	pruned := false
	for _, n := range e.held.nodes {
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
	if e.closed || e.held.timer == nil {
		return
	}
	now := time.Now()
	var next time.Time
	for _, n := range e.held.nodes {
		if !now.Before(n.heldUntil) {
			e.release(n)
		} else if next.IsZero() || n.heldUntil.Before(next) {
			next = n.heldUntil
		}
	}
	if !next.IsZero() {
		e.held.timer.Reset(next.Sub(now))
	}
	e.heldChanged("held for " + e.failStatic.MaxAge.String())
	e.publish()
}

// failedHeld lets go of the held instance n, an attempt on which failed.
func (e *Endpointer) failedHeld(n *Node) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed || e.held.nodes[n.instance] != n {
		return
	}
	e.release(n)
	e.heldChanged("an attempt failed")
	e.publish()
}

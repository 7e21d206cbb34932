package client

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/go-kit/log/level"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/internal/ctxtime"
)

// struck counts a failed attempt on n, of outcome o, and ejects n once it
// has failed Ejection.ConsecutiveFailures times in a row (or once at all
// while on probation), unless its peers fail so often too that such a
// streak says nothing (streakNeeded); a held instance (see FailStatic) is
// let go at once. An attempt that ran out its whole share counts twice.
func (e *Endpointer) struck(n *Node, o outcome) (ejected bool) {
	if n.held.Load() {
		e.failedHeld(n)
		return false
	}
	threshold := int32(e.ejection.ConsecutiveFailures)
	if n.probation.Load() {
		threshold = 1
	}
	strikes := int32(1)
	if o == timedOut {
		strikes = 2
	}
	// Counted with ejection disabled too: fail-static holds only an
	// instance whose last attempt did not fail.
	if f := n.failures.Add(strikes); f >= threshold && f >= n.need.Load() && !e.ejection.Disabled {
		return e.ejectStreak(n, o, f)
	}
	return false
}

// chanceStreak is how unlikely a streak of failures must be, at the rate
// at which an instance's peers fail, to say that the instance is worse
// than they: at that chance a healthy instance is ejected by bad luck
// about once in a million attempts.
const chanceStreak = 1e-6

// ejectStreak ejects n after a streak of f failures, unless its peers
// fail so often that f in a row is likely by chance; then it waits for the
// streak that is not.
func (e *Endpointer) ejectStreak(n *Node, o outcome, f int32) (ejected bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if need := e.streakNeeded(n); f < need {
		n.need.Store(need)
		return false
	}
	return e.eject(n, o.String())
}

// streakNeeded is how many failures in a row it takes for n to look worse
// than its peers: 0 while they do not fail, more the more often they fail
// (a streak as unlikely as chanceStreak at their failure rate), and never
// when they all fail (the service's failure, not n's: a dependency they
// share). With no peer to compare with, 0. Over fewer than
// minPeerAttempts attempts of theirs, their rate is Laplace's estimate,
// one failure more in two attempts more, so that a few answers in the
// first moments do not vouch for them. e.mu is held.
func (e *Endpointer) streakNeeded(n *Node) int32 {
	var peers tally
	some := false
	for _, p := range e.order {
		if p != n && !p.ejected {
			peers = peers.plus(p.window())
			some = true
		}
	}
	if !some {
		return 0 // none to compare with: MaxEjectedFraction decides
	}
	fail, total := float64(peers.fail), float64(peers.total())
	if total < minPeerAttempts {
		fail, total = fail+1, total+2
	}
	switch {
	case fail == 0:
		return 0
	case fail == total:
		return math.MaxInt32
	}
	return int32(min(math.Ceil(math.Log(chanceStreak)/math.Log(fail/total)), math.MaxInt32))
}

// minPeerAttempts is how many attempts of its peers' it takes to go by
// their failure rate as it is.
const minPeerAttempts = 10

// eject takes n out of picking, unless it is out already, gone, or one more
// ejection would pass MaxEjectedFraction; a probe brings it back. why says
// what it failed, and it reports whether it ejected n. e.mu is held.
func (e *Endpointer) eject(n *Node, why string) bool {
	if e.closed || n.ejected || e.byInst[n.instance] != n {
		return false
	}
	// Every change to a node's ejection is published under e.mu, so the
	// snapshot counts them.
	ejected := len(e.current.Load().tiers[tierEjected])
	if limit := int(float64(len(e.order)) * e.ejection.MaxEjectedFraction); ejected >= limit {
		return false
	}
	if time.Since(n.readmittedAt) > e.ejection.MaxTime {
		n.ejections = 0 // it behaved for long enough: start over
	}
	d := e.nextEjection(n)
	n.ejected = true
	n.probeAt = time.Now().Add(d)
	n.probation.Store(false)
	n.failures.Store(0)
	n.need.Store(0)
	e.publish()
	_ = level.Info(e.logger).Log("msg", "instance ejected", "instance", n.instance, "after", why, "for", d, "ejections_in_a_row", n.ejections)
	add(e.metrics.Ejections, "instance", n.instance)

	ctx, cancel := context.WithCancel(e.ctx)
	n.probeCancel = cancel
	e.wg.Add(1)
	go e.probeAfter(ctx, n, d)
	return true
}

// tally counts attempts that answered and that failed.
type tally struct{ ok, fail int64 }

func (t tally) plus(u tally) tally { return tally{t.ok + u.ok, t.fail + u.fail} }
func (t tally) total() int64       { return t.ok + t.fail }

// rate is the share of attempts that answered.
func (t tally) rate() float64 { return float64(t.ok) / float64(t.total()) }

// count is n's tally since it was first listed.
func (n *Node) count() tally { return tally{n.okTotal.Load(), n.failTotal.Load()} }

// window is n's tally since the older of its marks: over the last one to
// one and a half SuccessRate.Intervals. owner.mu is held.
func (n *Node) window() tally {
	c := n.count()
	return tally{c.ok - n.marks[0].ok, c.fail - n.marks[0].fail}
}

// sweep runs every half SuccessRate.Interval until the Endpointer closes:
// it ejects the instances whose success rate over the last Interval is an
// outlier (see SuccessRate), then moves every instance's window on.
func (e *Endpointer) sweep() {
	defer e.wg.Done()
	t := time.NewTicker(e.ejection.SuccessRate.Interval / 2)
	defer t.Stop()
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-t.C:
		}
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			return
		}
		if !e.ejection.SuccessRate.Disabled {
			e.ejectOutliers()
		}
		for _, n := range e.order {
			n.marks = [2]tally{n.marks[1], n.count()}
			n.need.Store(0)
		}
		e.mu.Unlock()
	}
}

// Bounds of success-rate ejection besides SuccessRate's: an instance is an
// outlier only if its success rate is at least minRateGap below its peers'
// mean, and further below than chance would put it (noiseFactor standard
// errors of a rate over its attempts).
const (
	minRateGap  = 0.05
	noiseFactor = 3
)

// ejectOutliers ejects the instances whose success rate over the window is
// an outlier among those with enough attempts, lowest first, as long as
// MaxEjectedFraction allows. e.mu is held.
func (e *Endpointer) ejectOutliers() {
	sr := e.ejection.SuccessRate
	type host struct {
		n           *Node
		t           tally
		rate, peers float64 // its success rate and the mean of its peers'
	}
	var hosts []host
	var sum, sumSq float64
	for _, n := range e.order {
		if t := n.window(); !n.ejected && t.total() >= int64(sr.MinRequests) && t.total() > 0 {
			r := t.rate()
			hosts = append(hosts, host{n: n, t: t, rate: r})
			sum += r
			sumSq += r * r
		}
	}
	if len(hosts) < sr.MinInstances {
		return
	}
	var outliers []host
	m := float64(len(hosts) - 1)
	for _, h := range hosts {
		// The mean and standard deviation of the others' rates: h's own
		// would pull both towards it.
		mean := (sum - h.rate) / m
		sd := math.Sqrt(max((sumSq-h.rate*h.rate)/m-mean*mean, 0))
		noise := noiseFactor * math.Sqrt(mean*(1-mean)/float64(h.t.total()))
		if h.rate < mean-max(sr.StdevFactor*sd, noise, minRateGap) {
			h.peers = mean
			outliers = append(outliers, h)
		}
	}
	slices.SortFunc(outliers, func(a, b host) int { return cmp.Compare(a.rate, b.rate) })
	for _, h := range outliers {
		e.eject(h.n, fmt.Sprintf("success rate %.1f%% of %d attempts within the last %v, its peers' %.1f%%", 100*h.rate, h.t.total(), sr.Interval, 100*h.peers))
	}
}

// nextEjection counts one more ejection of n in a row and returns how long
// it lasts: BaseTime, doubled for each ejection in a row before, at most
// MaxTime. e.mu is held.
func (e *Endpointer) nextEjection(n *Node) time.Duration {
	d := e.ejection.BaseTime
	for range n.ejections {
		if d >= e.ejection.MaxTime {
			break
		}
		d *= 2
	}
	n.ejections++
	return min(d, e.ejection.MaxTime)
}

// probeAfter waits out n's ejection, then probes it until it passes,
// waiting longer after each failed probe, and readmits it on probation.
func (e *Endpointer) probeAfter(ctx context.Context, n *Node, d time.Duration) {
	defer e.wg.Done()
	for {
		if !ctxtime.Sleep(ctx, d) {
			return
		}
		err := e.probe(ctx, n)
		e.mu.Lock()
		if ctx.Err() != nil || e.closed || e.byInst[n.instance] != n {
			e.mu.Unlock()
			return
		}
		if err != nil {
			d = e.nextEjection(n)
			n.probeAt = time.Now().Add(d)
			e.mu.Unlock()
			_ = level.Info(e.logger).Log("msg", "ejected instance failed its probe", "instance", n.instance, "err", err, "next_probe_in", d)
			continue
		}
		n.ejected = false
		n.probation.Store(true)
		n.readmittedAt = time.Now()
		// Its window starts again: the failures that ejected it are not
		// held against it twice.
		n.marks = [2]tally{n.count(), n.count()}
		n.probeCancel() // releases ctx from e.ctx; it is done with
		n.probeCancel = nil
		e.publish()
		e.mu.Unlock()
		_ = level.Info(e.logger).Log("msg", "instance readmitted on probation", "instance", n.instance)
		return
	}
}

// probe asks n's connection for its grpc.health.v1 status, so that no
// caller's call is spent finding out whether it is back. An instance that
// cannot be asked passes, on the time it served: one without a gRPC
// connection (a Factory of another kind), one whose server has no health
// service (Unimplemented), and one whose health service does not know the
// service name (NotFound). Failing those would keep such an instance out
// for good, probed every MaxTime; on probation, its next failure ejects
// it again. Any other error, NOT_SERVING included, is a failed probe.
func (e *Endpointer) probe(ctx context.Context, n *Node) error {
	conn, ok := n.closer.(grpc.ClientConnInterface)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, e.ejection.ProbeTimeout)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: e.ejection.HealthService})
	switch status.Code(err) {
	case codes.OK:
	case codes.Unimplemented, codes.NotFound:
		return nil
	default:
		return err
	}
	if s := resp.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
		return errNotServing{s}
	}
	return nil
}

type errNotServing struct {
	status healthpb.HealthCheckResponse_ServingStatus
}

func (e errNotServing) Error() string { return "health: " + e.status.String() }

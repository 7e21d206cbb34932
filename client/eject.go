package client

import (
	"context"
	"time"

	"github.com/go-kit/log/level"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/internal/ctxtime"
)

// struck counts a failed attempt on n, of outcome o, and ejects n once it
// has failed Ejection.ConsecutiveFailures times in a row, or once at all
// while on probation; a held instance (see FailStatic) is let go at once.
// An attempt that ran out its whole share counts twice.
func (e *Endpointer) struck(n *Instance, o outcome) {
	if n.held.Load() {
		e.failedHeld(n)
		return
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
	if n.failures.Add(strikes) >= threshold && !e.ejection.Disabled {
		e.eject(n, o)
	}
}

// eject takes n out of picking, unless it is out already, gone, or one more
// ejection would pass MaxEjectedFraction; a probe brings it back.
func (e *Endpointer) eject(n *Instance, o outcome) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed || n.ejected || e.byInst[n.instance] != n {
		return
	}
	// Every change to a node's ejection is published under e.mu, so the
	// snapshot counts them.
	ejected := len(e.current.Load().tiers[tierEjected])
	if limit := int(float64(len(e.order)) * e.ejection.MaxEjectedFraction); ejected >= limit {
		return
	}
	if time.Since(n.readmittedAt) > e.ejection.MaxTime {
		n.ejections = 0 // it behaved for long enough: start over
	}
	d := e.nextEjection(n)
	n.ejected = true
	n.probation.Store(false)
	n.failures.Store(0)
	e.publish()
	_ = level.Info(e.logger).Log("msg", "instance ejected", "instance", n.instance, "after", o, "for", d, "ejections_in_a_row", n.ejections)
	add(e.metrics.Ejections, "instance", n.instance)

	ctx, cancel := context.WithCancel(e.ctx)
	n.probeCancel = cancel
	e.wg.Add(1)
	go e.probeAfter(ctx, n, d)
}

// nextEjection counts one more ejection of n in a row and returns how long
// it lasts: BaseTime, doubled for each ejection in a row before, at most
// MaxTime. e.mu is held.
func (e *Endpointer) nextEjection(n *Instance) time.Duration {
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
func (e *Endpointer) probeAfter(ctx context.Context, n *Instance, d time.Duration) {
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
			e.mu.Unlock()
			_ = level.Info(e.logger).Log("msg", "ejected instance failed its probe", "instance", n.instance, "err", err, "next_probe_in", d)
			continue
		}
		n.ejected = false
		n.probation.Store(true)
		n.readmittedAt = time.Now()
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
func (e *Endpointer) probe(ctx context.Context, n *Instance) error {
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

package sd

import (
	"context"
	"fmt"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/trimkit/trimkit/internal/ctxtime"
)

// Backoff bounds between registration attempts.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 2 * time.Second
)

// Register registers an instance that is ready and serving, retrying with
// exponential backoff while the agent cannot be reached or fails, until
// ctx ends: bound it with a deadline. Its check starts passing, so that
// discovery lists it at once rather than one check interval later (the
// agent's first run of the check, at a random point of the first
// interval, sets it from then on); register only once the instance is
// ready, as grpcserver.Instance does once its health service says
// SERVING. A permanent failure (a missing ACL permission or an unknown
// token, once the token file has been read again; TLS that does not
// verify) is returned at once: at start-up it is a misconfiguration. The
// error it gives up with names the Consul address and the last reason.
func (r *Registrar) Register(ctx context.Context) error {
	start := time.Now()
	backoff := minBackoff
	for attempt := 1; ; attempt++ {
		err := r.register(ctx, true)
		if err == nil {
			_ = level.Info(r.logger).Log("msg", "registered in consul", "consul", agentAddr(r.client, nil), "attempts", attempt)
			return nil
		}
		if permanent(err) {
			return err
		}
		_ = level.Warn(r.logger).Log("msg", "registration failed, retrying", "attempt", attempt, "backoff", backoff, "err", err)
		if !ctxtime.Sleep(ctx, backoff) {
			return fmt.Errorf("gave up registering with consul at %s after %d attempts in %v: %w", agentAddr(r.client, err), attempt, time.Since(start).Round(time.Millisecond), err)
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// KeepRegistered checks every interval that the local agent still holds the
// instance and registers it again when it does not (a restarted dev agent
// forgets every service), or when the ACL token changed since it was
// registered (a rotated token file): the agent syncs a service and its
// checks to the catalog with the token they were registered with, and once
// the old token is deleted it could not tell the catalog of a failing
// check, or a recovered one.
//
// It returns nil when ctx is done, and fails only for an interval that is
// not positive. A serving instance never ends itself over Consul: a round
// that fails (the agent unreachable, a 403 for a deleted token, TLS that
// no longer verifies) is tried again after a backoff of
// 100ms doubling up to interval, with the token and TLS files read again
// when they change; the failure is logged at error level when it starts,
// every minute while it goes on, and once it ends (at info level), and
// counted in the metrics of WithFailureMetrics.
//
// A round in flight when ctx ends may still register the instance; so the
// caller stops KeepRegistered and waits for it to return before it calls
// Deregister. grpcserver.Instance does exactly that: a program that runs
// its instance with it calls neither.
func (r *Registrar) KeepRegistered(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		return fmt.Errorf("resync interval %v is not positive", interval)
	}
	t := newTrouble("keep the registration", log.With(r.logger, "consul", agentAddr(r.client, nil)), r.opts)
	wait, backoff := interval, min(minBackoff, interval)
	for ctxtime.Sleep(ctx, wait) {
		err := r.resync(ctx, interval)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			t.ok()
			wait, backoff = interval, min(minBackoff, interval)
			continue
		}
		wait = jitter(backoff)
		t.failed(err, wait)
		backoff = min(2*backoff, interval)
	}
	return nil
}

// resync registers the instance again if the agent lost it, or if the
// token changed since it was registered. One round is bounded by interval
// so that a hung agent cannot stall the loop.
func (r *Registrar) resync(ctx context.Context, interval time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, interval)
	defer cancel()
	lookup, used := withTokenUsed(ctx)
	ok, err := r.isRegistered(lookup)
	if err != nil {
		return err
	}
	rotated := ok && used.get() != "" && used.get() != r.registeredWith()
	if ok && !rotated {
		return nil
	}
	if err := r.register(ctx, false); err != nil {
		return err
	}
	if rotated {
		_ = level.Info(r.logger).Log("msg", "registered again with the new ACL token, for the agent to sync the service with it", "consul", agentAddr(r.client, nil))
	} else {
		_ = level.Info(r.logger).Log("msg", "registered again: the agent had lost the service", "consul", agentAddr(r.client, nil))
	}
	return nil
}

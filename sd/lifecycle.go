package sd

import (
	"context"
	"fmt"
	"time"

	"github.com/go-kit/log/level"

	"github.com/trimkit/trimkit/internal/ctxtime"
)

// Backoff bounds between registration attempts.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 2 * time.Second
)

// RegisterWithRetry registers the instance, retrying with exponential backoff
// while the agent cannot be reached or fails, for at most timeout. A
// permanent failure (a missing ACL permission, TLS that does not verify:
// see Permanent) is returned at once. The error it gives up with names the
// Consul address and the last reason.
func (r *Registrar) RegisterWithRetry(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	backoff := minBackoff
	for attempt := 1; ; attempt++ {
		err := r.Register(ctx)
		if err == nil {
			_ = level.Info(r.logger).Log("msg", "registered in consul", "consul", r.consulAddr, "attempts", attempt)
			return nil
		}
		if Permanent(err) {
			return err
		}
		_ = level.Warn(r.logger).Log("msg", "registration failed, retrying", "attempt", attempt, "backoff", backoff, "err", err)
		if !ctxtime.Sleep(ctx, backoff) {
			return fmt.Errorf("gave up registering with consul at %s after %d attempts in %v: %w", r.consulAddr, attempt, timeout, err)
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// KeepRegistered checks every interval that the local agent still holds the
// instance and registers it again when it does not (a restarted dev agent
// forgets every service). It returns nil when ctx is done; failures to reach
// the agent are logged and tried again at the next tick, since the agent
// may come back, but a permanent one (its token revoked, say) is returned.
//
// A round in flight when ctx ends may still register the instance; so the
// caller stops KeepRegistered and waits for it to return before it calls
// Deregister. grpcserver.Instance does exactly that: a program that runs
// its instance with it calls neither.
func (r *Registrar) KeepRegistered(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		return fmt.Errorf("resync interval %v is not positive", interval)
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
		if err := r.resync(ctx, interval); err != nil && ctx.Err() == nil {
			if Permanent(err) {
				return fmt.Errorf("keep registered: %w", err)
			}
			_ = level.Warn(r.logger).Log("msg", "resync failed", "err", err)
		}
	}
}

// resync registers the instance again if the agent lost it. One round is
// bounded by interval so that a hung agent cannot stall the loop.
func (r *Registrar) resync(ctx context.Context, interval time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, interval)
	defer cancel()
	ok, err := r.Registered(ctx)
	if err != nil || ok {
		return err
	}
	if err := r.Register(ctx); err != nil {
		return err
	}
	_ = level.Info(r.logger).Log("msg", "registered again: the agent had lost the service", "consul", r.consulAddr)
	return nil
}

package grpcserver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-kit/log/level"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Run runs the instance until ctx ends (the program cancels it on SIGTERM),
// the server stops by itself, Ready fails or a Background task fails, in
// the one order that loses no caller's call:
//
//  1. serve, with health NOT_SERVING;
//  2. wait for Ready, then health SERVING;
//  3. register in Consul (retried for RegisterTimeout; a 403 or TLS that
//     does not verify fails at once), then keep registered (every
//     ResyncInterval) and run Background; once in service, nothing Consul
//     answers ends the instance (sd.Registrar.KeepRegistered retries every
//     failure, a revoked token or a refused certificate included, and
//     says so);
//  4. on the way out, stop those and wait for them (so that a resync
//     cannot register a leaving instance again), health NOT_SERVING,
//     deregister (bounded, 5s), drain;
//  5. stop gracefully, at most StopTimeout, then end the streaming calls
//     still open (a GRPCServer's: Unavailable) and cut off what is left.
//
// Until it is in service (ready and registered) it has no caller to lose:
// a failure, or ctx ending, stops the server at once.
//
// It returns nil after a clean stop on ctx (a Background task that returns
// ctx's error when stopped is clean too); else the error that ended the
// instance joined with that of leaving (a failed deregistration is an
// error: the instance stays in Consul until its check has been critical
// for the registration's DeregisterAfter). An invalid Instance is an
// error, returned at once, its Listener closed.
func (in Instance) Run(ctx context.Context) error {
	c, err := in.check()
	if err != nil {
		if in.Listener != nil {
			in.Listener.Close()
		}
		return fmt.Errorf("grpcserver: invalid Instance: %w", err)
	}
	return c.run(ctx)
}

func (c *instance) run(ctx context.Context) error {
	c.setHealth(healthpb.HealthCheckResponse_NOT_SERVING)
	served := make(chan error, 1)
	go func() {
		_ = level.Info(c.Logger).Log("msg", strings.TrimSpace("serving "+c.proto), "addr", c.Listener.Addr(), "advertised", c.advertised)
		served <- c.Server.Serve(c.Listener)
	}()

	if inService, err := c.start(ctx, served); !inService {
		if c.Health != nil {
			c.Health.Shutdown()
		}
		c.Server.Stop()
		<-served
		return err // nil when ctx ended
	}

	// In service: keep registered and run the background tasks until the
	// instance ends.
	tasks := c.Background
	if c.Registrar != nil {
		tasks = append([]func(context.Context) error{func(ctx context.Context) error {
			return c.Registrar.KeepRegistered(ctx, c.ResyncInterval)
		}}, tasks...)
	}
	bg, stopBackground := context.WithCancel(ctx)
	failed := make(chan error, len(tasks))
	var wg sync.WaitGroup
	for _, task := range tasks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := task(bg); err != nil && !stopped(bg, err) {
				failed <- err
			}
		}()
	}
	var endErr error
	select {
	case <-ctx.Done():
	case err := <-served:
		served = nil
		endErr = c.stoppedByItself(err)
	case endErr = <-failed:
	}
	stopBackground()
	wg.Wait()
	close(failed)
	for err := range failed {
		endErr = errors.Join(endErr, err)
	}

	leaveErr := c.leave(served != nil)
	c.stop()
	if served != nil {
		endErr = errors.Join(endErr, <-served)
	}
	return errors.Join(endErr, leaveErr)
}

// stopped reports whether err is only a task's word that ctx, its
// context, has ended: no failure.
func stopped(ctx context.Context, err error) bool {
	return ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded))
}

// stoppedByItself is the error of a server whose Serve returned err
// before it was asked to stop.
func (c *instance) stoppedByItself(err error) error {
	what := strings.TrimSpace(c.proto + " server stopped")
	if err == nil {
		return errors.New(what)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// start waits for Ready, turns health SERVING and registers. It reports
// whether the instance is in service: not when ctx ended first (err nil)
// or on a failure (err). When the server stops meanwhile, its error is put
// back on served for run to read.
func (c *instance) start(ctx context.Context, served chan error) (inService bool, err error) {
	if c.Ready != nil {
		ready := make(chan error, 1)
		readyCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() { ready <- c.Ready(readyCtx) }()
		select {
		case err = <-ready:
		case serr := <-served:
			cancel()
			<-ready
			served <- serr
			return false, fmt.Errorf("before it was ready: %w", c.stoppedByItself(serr))
		}
		switch {
		case ctx.Err() != nil:
			return false, nil
		case err != nil:
			return false, fmt.Errorf("not ready: %w", err)
		}
	}
	c.setHealth(healthpb.HealthCheckResponse_SERVING)
	if c.Registrar == nil {
		_ = level.Info(c.Logger).Log("msg", "not registering: the agent's configuration owns the registration")
		return ctx.Err() == nil, nil
	}
	regCtx, cancel := context.WithTimeout(ctx, c.RegisterTimeout)
	err = c.Registrar.Register(regCtx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			err = nil // stopped while registering: not a failure
		}
		// An attempt cut short (by ctx or RegisterTimeout) may have
		// reached the agent all the same.
		var derr error
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			derr = c.deregister()
		}
		return false, errors.Join(err, derr)
	}
	// Registered: from here on, whatever ends the instance, it leaves
	// Consul before it stops.
	return true, nil
}

// setHealth sets the status of "" and of HealthService.
func (c *instance) setHealth(status healthpb.HealthCheckResponse_ServingStatus) {
	if c.Health == nil {
		return
	}
	for _, name := range c.healthNames {
		c.Health.SetServingStatus(name, status)
	}
}

// leave takes the instance out of service: health NOT_SERVING (so that
// Consul's check and health clients see it going), deregistration, then
// the drain, the time callers need to stop picking the instance, while it
// still answers (if serving: a server that stopped answers nothing).
// Without a Registrar the agent owns the registration: the instance stays
// registered, and its check going critical takes it out of the passing
// list within a check interval, which the drain should cover.
func (c *instance) leave(serving bool) error {
	if c.Health != nil {
		c.Health.Shutdown()
	}
	var err error
	if c.Registrar == nil {
		_ = level.Info(c.Logger).Log("msg", "NOT_SERVING; the agent's check takes the instance out; draining", "drain", c.Drain)
	} else {
		_ = level.Info(c.Logger).Log("msg", "NOT_SERVING; deregistering")
		if err = c.deregister(); err == nil {
			_ = level.Info(c.Logger).Log("msg", "deregistered from consul; draining", "drain", c.Drain)
		}
	}
	if serving {
		time.Sleep(c.Drain)
		_ = level.Info(c.Logger).Log("msg", "drained; stopping gracefully")
	}
	return err
}

// deregister deregisters the instance, for at most deregisterTimeout, and
// logs a failure.
func (c *instance) deregister() error {
	ctx, cancel := context.WithTimeout(context.Background(), deregisterTimeout)
	defer cancel()
	err := c.Registrar.Deregister(ctx)
	if err != nil {
		_ = level.Error(c.Logger).Log("msg", "deregistration failed", "err", err)
	}
	return err
}

// streamsEndWait is how long the streaming calls still open when
// StopTimeout is up have, once their contexts end, to answer before their
// connections are closed: a handler that returns on its context's end
// does within a millisecond, and a caller whose stream ends with its
// answer, not with a broken connection, learns it is to open it again
// elsewhere.
const streamsEndWait = 200 * time.Millisecond

// stop stops the server gracefully, waiting at most StopTimeout for the
// calls in flight; then it ends a GRPCServer's streaming calls still open,
// gives them streamsEndWait to answer, and cuts off what is left, without
// waiting for handlers that go on regardless.
func (c *instance) stop() {
	if s, ok := c.Server.(*GRPCServer); ok {
		s.a.leave() // streams that can end by themselves do (Leaving)
	}
	done := make(chan struct{})
	go func() {
		c.Server.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(c.StopTimeout)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	}
	if s, ok := c.Server.(*GRPCServer); ok {
		_ = level.Warn(c.Logger).Log("msg", "graceful stop timed out; ending the streams still open, then cutting off what is left",
			"timeout", c.StopTimeout, "streams", s.a.streams.Load())
		s.a.stopStreams()
		t.Reset(streamsEndWait)
		select {
		case <-done:
			return
		case <-t.C:
		}
	} else {
		_ = level.Warn(c.Logger).Log("msg", "graceful stop timed out; closing remaining connections", "timeout", c.StopTimeout)
	}
	c.Server.Stop()
	// Not <-done: a *grpc.Server's GracefulStop returns only once every
	// handler has, and one that ignores its context's end may never.
	// Stop has closed the connections; such a handler answers nobody.
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/ctxtime"
	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport/trim"
)

// How the soak waits: after the load starts, before the first fault; after
// each fault has recovered, before its window closes (so that every call
// it touched has ended: a call gives up after 500ms); and at most for a
// fault to recover.
const (
	chaosWarmup  = 5 * time.Second
	chaosSettle  = 2 * time.Second
	chaosRecover = 90 * time.Second
	// How long after a token rotation the soak waits before it looks for
	// recovery: an instance that cannot live with the rotation finds out
	// at its next resync with its agent (every 10s, trimsvc's default
	// -resync-interval) and ends after its failed deregistration and its
	// drain (2s); the callers' watch finds out at its next query.
	instanceTokenWatch = 15 * time.Second
	callerTokenWatch   = 5 * time.Second
)

// outcome is what one fault did and cost.
type outcome struct {
	fault
	at        time.Duration // since the load started
	target    string
	what      string
	recovered time.Duration // from the fault's start until healthy again
	calls     int64
	failed    int64
	errs      map[string]int
	rss       int64
	// The client's failed Consul queries in the fault's window, and the
	// last one's error.
	discoveryFailures int64
	discoveryRefusals int64 // Consul refused the client's token
	discoveryErr      string
	// The times the client held instances the catalog dropped en masse
	// (fail-static), and the most it held at once.
	failStatic, held int64
}

// chaos is the chaos soak (see the synopsis).
func chaos(ctx context.Context, cfg config, w io.Writer) (err error) {
	seed := cfg.seed
	if seed == 0 {
		seed = rand.Uint64() >> 1 // a flag's value, printable and passable back
	}
	fmt.Fprintf(w, "chaos: seed %d (replay: %s), faults for %v, %v calls/s\n", seed, replay(cfg, seed), cfg.duration, cfg.rate)
	if cfg.sequence == sequenceWalkthrough {
		fmt.Fprintf(w, "chaos: the faults are the walkthrough's steps, one after the other as printed (their commands log to %s), the cluster recovered after each round\n",
			filepath.Join(cfg.state, "commands.log"))
	} else {
		fmt.Fprintf(w, "chaos: a shuffled deck of every kind: %d single faults, %d overlapping pairs (%s), and %d faults back to back with no recovery between\n",
			len(singlesOf(deckKinds(cfg.dcs))), len(overlaps), overlapNames(), backToBackLen)
	}
	if cfg.dcs > 1 {
		fmt.Fprintf(w, "chaos: %d datacenters, WAN-federated; the faults of one member hit dc1's, where the calls go while it is whole; those of a datacenter (%s) hit a whole datacenter or the WAN\n",
			cfg.dcs, strings.Join(kindNames(datacenterKinds()), ", "))
	}
	began := time.Now()
	f, _, err := startCluster(ctx, cfg, w)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "chaos: cluster up in %v (state, logs: %s):\n", time.Since(began).Round(100*time.Millisecond), f.dir)
	width := 10
	for _, p := range f.processes() {
		width = max(width, len(p.Name))
	}
	for _, p := range append(slices.Clone(f.st.Consul), f.st.Instances...) {
		fmt.Fprintf(w, "  %-*s pid %-7d %s\n", width, p.Name, p.PID, p.Addr)
	}
	var (
		failedCalls int64
		s           *soak
	)
	defer func() {
		err = errors.Join(err, f.teardown(w, "chaos", err != nil || failedCalls > 0))
		if s != nil && s.took > 0 { // after teardown, which removes the state it made
			err = errors.Join(err, s.writeReport(cfg.state))
		}
	}()

	s, err = newSoak(ctx, f, cfg, seed, w)
	if err != nil {
		return err
	}
	failedCalls, err = s.run(ctx)
	return err
}

// replay is the command that runs the soak of cfg and seed again.
func replay(cfg config, seed uint64) string {
	cmd := fmt.Sprintf("make chaos SEED=%d DURATION=%v RATE=%v SEQUENCE=%s", seed, cfg.duration, cfg.rate, cfg.sequence)
	if cfg.dcs > 1 {
		cmd += fmt.Sprintf(" DCS=%d", cfg.dcs)
	}
	return cmd
}

// soak is a chaos soak in progress.
type soak struct {
	f         *fleet
	cfg       config
	seed      uint64
	w         io.Writer
	client    *trim.Client
	load      *load
	discovery *discoveryWatch
	// failStatic and held are the client's fail-static metrics.
	failStatic *loadgen.Counter
	held       *heldGauge
	rss        rss
	outcomes   []outcome
	took       time.Duration // the load's, once it stopped
	// walk runs the walkthrough sequence's steps, its commands printing
	// to commands.log; nil for the deck. Its vars name the leader of the
	// round, nil until the first step.
	walk *walkRun
}

func newSoak(ctx context.Context, f *fleet, cfg config, seed uint64, w io.Writer) (*soak, error) {
	logPath := filepath.Join(f.dir, "client.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	// The file stays open until the process ends: the client logs until
	// it is closed, which teardown does not wait for.
	logger := level.NewFilter(log.NewLogfmtLogger(log.NewSyncWriter(logFile)), level.AllowInfo())
	failStatic, held := &loadgen.Counter{}, &heldGauge{}
	watch := &discoveryWatch{next: log.With(logger, "ts", log.DefaultTimestampUTC)}
	cf := f.st.Caller
	c, err := trim.NewClient(client.Config{
		Consul:      sd.ConsulConfig{Address: cf.ConsulAddr, TokenFile: cf.TokenFile, CAFile: cf.ConsulCA, CertFile: cf.ConsulCert, KeyFile: cf.ConsulKey},
		Datacenters: cf.Datacenters,
		CallConfig: client.CallConfig{Balancer: client.P2CName,
			TLS:              client.TLS{CAFile: cf.TLSCA, CertFile: cf.TLSCert, KeyFile: cf.TLSKey},
			EndpointerConfig: client.EndpointerConfig{Metrics: client.Metrics{FailStatic: failStatic, Held: held}}},
	}, client.WithLogger(watch))
	if err != nil {
		return nil, fmt.Errorf("the load's client: %w", err)
	}
	// The first call waits until the client has found the instances.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if _, err = c.TrimSpace(wctx, "x"); err == nil {
			break
		}
		if !ctxtime.Sleep(wctx, 100*time.Millisecond) {
			c.Close()
			return nil, fmt.Errorf("the load's client finds no instance: %w", err)
		}
	}
	dcs := ""
	if len(cf.Datacenters) > 0 {
		dcs = fmt.Sprintf(" of %s, -datacenters %s", cf.Datacenters[0], strings.Join(cf.Datacenters, ","))
	}
	fmt.Fprintf(w, "chaos: load: %v calls/s, open loop, p2c, mutual TLS, from this process (pid %d) through %s (client-2%s); client log %s\n",
		cfg.rate, os.Getpid(), cf.ConsulAddr, dcs, logPath)
	s := &soak{f: f, cfg: cfg, seed: seed, w: w, client: c, load: newLoad(c.Endpoint(), cfg.rate), discovery: watch,
		failStatic: failStatic, held: held}
	if cfg.sequence == sequenceWalkthrough {
		// The file stays open until the process ends, as the client's log.
		cmdLog, err := os.OpenFile(filepath.Join(f.dir, "commands.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			c.Close()
			return nil, err
		}
		s.walk = &walkRun{dir: f.dir, env: filepath.Join(f.dir, "client.env"), w: cmdLog}
	}
	return s, nil
}

// run sends the load, injects faults for cfg.duration and prints each and
// the summary; it returns the calls that failed.
func (s *soak) run(ctx context.Context) (int64, error) {
	defer s.client.Close()
	rctx, stopRSS := context.WithCancel(ctx)
	defer stopRSS()
	s.rss.sample()
	go s.rss.run(rctx)

	s.load.start(ctx)
	loadStart := time.Now()
	err := s.faults(ctx, loadStart)
	s.load.Stop()
	took := time.Since(loadStart)
	s.took = took
	s.summary(took)
	if s.cfg.json != "" {
		if jerr := s.writeJSON(s.cfg.json, took); jerr != nil {
			err = errors.Join(err, fmt.Errorf("-json: %w", jerr))
		} else {
			fmt.Fprintf(s.w, "report in JSON: %s\n", s.cfg.json)
		}
	}
	failed := s.load.failed.Load()
	switch {
	case err != nil:
		return failed, err
	case ctx.Err() != nil:
		return failed, fmt.Errorf("interrupted: %w", ctx.Err())
	case failed > 0:
		return failed, fmt.Errorf("%d of %d calls failed (seed %d)", failed, s.load.calls.Load(), s.seed)
	}
	return 0, nil
}

// faults injects one fault at a time until cfg.duration has passed.
func (s *soak) faults(ctx context.Context, loadStart time.Time) error {
	if !ctxtime.Sleep(ctx, chaosWarmup) {
		return nil
	}
	if n, errs := s.load.failures(-1); n > 0 {
		fmt.Fprintf(s.w, "warm-up: %d calls failed\n", n)
		printErrs(s.w, errs)
	}
	end := loadStart.Add(s.cfg.duration)
	next := newDeck(s.seed, deckKinds(s.cfg.dcs)).next
	if s.cfg.sequence == sequenceWalkthrough {
		next = walkFaults()
	}
	for i := int64(0); time.Now().Before(end) && ctx.Err() == nil; i++ {
		fl := next()
		o := outcome{fault: fl, at: time.Since(loadStart)}
		calls := s.load.calls.Load()
		discoveryFailures, refusals, _, _ := s.discovery.state()
		failStatic := s.failStatic.Value()
		s.held.takeMax()
		s.load.window.Store(i)
		start := time.Now()
		target, what, err := s.inject(ctx, fl)
		o.target, o.what = target, what
		if err != nil {
			return fmt.Errorf("fault #%d %s %s: %w", i+1, fl.kind, target, err)
		}
		var notes []string
		if !fl.noRecover {
			notes, err = s.recover(ctx)
		}
		o.recovered = time.Since(start)
		if len(notes) > 0 {
			o.what += "; " + strings.Join(notes, "; ")
		}
		if err != nil {
			s.outcomes = append(s.outcomes, o)
			s.printOutcome(i, o)
			return fmt.Errorf("fault #%d %s %s: no recovery: %w", i+1, fl.kind, target, err)
		}
		if !fl.noRecover && !ctxtime.Sleep(ctx, max(time.Until(start.Add(fl.gap)), chaosSettle)) {
			return nil
		}
		o.calls = s.load.calls.Load() - calls
		o.failed, o.errs = s.load.failures(i)
		n, r, _, lastErr := s.discovery.state()
		if o.discoveryFailures, o.discoveryRefusals = n-discoveryFailures, r-refusals; o.discoveryFailures > 0 {
			o.discoveryErr = lastErr
		}
		o.failStatic, o.held = s.failStatic.Value()-failStatic, s.held.takeMax()
		o.rss = s.rss.sample()
		s.outcomes = append(s.outcomes, o)
		s.printOutcome(i, o)
	}
	return nil
}

// teardown stops everything the soak (or the walkthrough, who) started, by
// PID (a frozen instance thawed first), and removes its state; after a
// failed run it keeps the logs and says where.
func (f *fleet) teardown(w io.Writer, who string, keep bool) error {
	lines, err := f.stopAll(graceOutside(f.leaderless())) // a frozen member thawed first
	fmt.Fprintf(w, "%s: stopped %d processes (%s)\n", who, len(lines), strings.Join(lines, "; "))
	if err != nil {
		return fmt.Errorf("%w (run `bin/trimdev down -state %s`)", err, f.dir)
	}
	f.closeClusters() // their port blocks
	if keep {
		kept, err := keepLogs(f.dir, time.Now())
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s: the logs are kept in %s\n", who, kept)
	}
	return removeState(f.dir)
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/metrics/generic"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/internal/otelenv"
	"github.com/trimkit/trimkit/transport/trim"
)

func call(ctx, stop context.Context, cfg config, stdout, stderr io.Writer) error {
	// One writer for the client's log, the progress line and the signals'
	// line, each from a goroutine of its own: their lines do not mix.
	// Whether it is a terminal is asked of stderr itself, not of the
	// wrapper.
	tty := isTerminal(stderr)
	stderr = log.NewSyncWriter(stderr)
	// Info: ejections and readmissions are what a user of this tool wants
	// to see happen.
	logger := level.NewFilter(log.NewLogfmtLogger(stderr), level.AllowInfo())
	logger = log.With(logger, "ts", log.DefaultTimestampUTC)
	quiet := &discoveryLog{next: logger, instances: generic.NewGauge("instances")}
	attempts := &loadgen.Counter{}
	cfg.client.Metrics = client.Metrics{Attempts: attempts, Instances: quiet.instances}
	if cfg.httpAddr != "off" {
		reg, m, err := promMetrics()
		if err != nil {
			return err
		}
		cfg.client.Metrics = tee(m, cfg.client.Metrics)
		srv, err := serveDebug(cfg.httpAddr, reg)
		if err != nil {
			return err
		}
		defer srv.Close()
		_ = level.Info(logger).Log("msg", "serving /metrics and /debug/trimkit", "url", srv.URL())
	}
	cfg.client.FailStatic = cfg.failStatic
	tracing, err := otelenv.FromEnv(ctx, os.Getenv, "client")
	if err != nil {
		return err
	}
	defer func() {
		// After the client's Close (deferred below, so run first): its
		// last spans have ended.
		flush, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if terr := tracing.Shutdown(flush); terr != nil {
			_ = level.Warn(logger).Log("msg", "tracing", "err", terr)
		}
	}()
	if tracing.Provider != nil {
		cfg.client.Retry.TracerProvider = tracing.Provider
	}
	c, err := trim.NewClient(cfg.client, client.WithLogger(quiet))
	if err != nil {
		return err
	}
	defer c.Close()

	if !cfg.load() {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(stop, cancel)()
		out, err := c.TrimSpace(ctx, cfg.text)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, out)
		return err
	}
	return load(ctx, stop, c.Endpoint(), attempts, cfg, stdout, stderr, tty)
}

// load runs the load generator through e, whose attempts are counted in
// attempts, and prints its summary, with a progress line on stderr once a
// second when tty says it is a terminal. stderr must be safe for
// concurrent use. When stop ends, no call starts any more, and the
// summary waits for the calls in flight (each bounded by the retry
// timeout) to end by themselves; when ctx ends, they are cancelled.
func load(ctx, stop context.Context, e endpoint.Endpoint, attempts *loadgen.Counter, cfg config, stdout, stderr io.Writer, tty bool) error {
	// A summary only: every Call kept would grow the client by 64 bytes a
	// call (11 MB for 10 minutes at 300/s) and its heap goal by twice that.
	o := loadgen.Options{Callers: cfg.c, Rate: cfg.rate, Duration: cfg.duration, SummaryOnly: true}
	if cfg.duration == 0 {
		o.N = cfg.n
	}
	run := loadgen.Start(ctx, e, cfg.text, o)
	defer context.AfterFunc(stop, func() {
		fmt.Fprintln(stderr, "client: stopping: no new requests; waiting for those in flight to end (signal again to cancel them)")
		run.StopStarting()
	})()
	if tty {
		stop := progress(run, stderr)
		defer stop()
	}
	run.Wait()
	s, samples := run.Summary()
	s.Attempts = int(attempts.Value())
	for _, e := range samples {
		fmt.Fprintf(stderr, "failure: %s\n", e)
	}
	if cfg.json {
		if err := json.NewEncoder(stdout).Encode(s); err != nil {
			return err
		}
	} else {
		s.Print(stdout)
	}
	switch {
	case stop.Err() != nil || ctx.Err() != nil:
		return fmt.Errorf("interrupted after %d requests, %d failed", s.Requests, s.Failures)
	case s.Failures > 0:
		return fmt.Errorf("%d of %d requests failed", s.Failures, s.Requests)
	}
	return nil
}

// discoveryLog passes the client stack's log on, but holds back the lines
// that say discovery failed while the client knows no instance: every call
// then fails with an error that says the same, which this command prints,
// so that the user reads it once rather than once a line. Once the client
// knows instances such lines are the only sign that discovery fails (the
// calls go on), and pass.
type discoveryLog struct {
	next      log.Logger
	instances *generic.Gauge // the instances the client holds
}

// Log implements log.Logger.
func (d *discoveryLog) Log(keyvals ...any) error {
	if discoveryFailed(keyvals) && !d.instancesKnown() {
		return nil
	}
	return d.next.Log(keyvals...)
}

func (d *discoveryLog) instancesKnown() bool { return d.instances.Value() > 0 }

// discoveryFailed reports whether a log line says that discovery failed:
// sd's Instancer's ("first consul query failed", "consul query failed;
// ...") and the Endpointer's ("discovery failed ...").
func discoveryFailed(keyvals []any) bool {
	for i := 0; i+1 < len(keyvals); i += 2 {
		if keyvals[i] == "msg" {
			msg, _ := keyvals[i+1].(string)
			return strings.Contains(msg, "consul query failed") || strings.HasPrefix(msg, "discovery failed")
		}
	}
	return false
}

// progress writes a line about run every second, after the first two
// (a short run prints none), and returns a function that ends it.
func progress(run *loadgen.Run, w io.Writer) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		start := time.Now()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		printed := false
		for {
			select {
			case <-done:
				if printed {
					fmt.Fprintln(w)
				}
				return
			case now := <-tick.C:
				if now.Sub(start) < 2*time.Second {
					continue
				}
				n, failed := run.Progress()
				fmt.Fprintf(w, "\r%5.0fs  %d requests, %d failed, %.0f/s   ", now.Sub(start).Seconds(), n, failed, float64(n)/now.Sub(start).Seconds())
				printed = true
			}
		}
	}()
	return func() { close(done); <-finished }
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}

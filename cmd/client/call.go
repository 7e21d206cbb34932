package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/transport"
)

func call(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	// Info: ejections and readmissions are what a user of this tool wants
	// to see happen.
	logger := level.NewFilter(log.NewLogfmtLogger(log.NewSyncWriter(stderr)), level.AllowInfo())
	logger = log.With(logger, "ts", log.DefaultTimestampUTC)
	attempts := &loadgen.Counter{}
	c, err := transport.NewTrimClient(cfg.client, client.WithLogger(logger), client.WithEndpointer(
		client.WithMetrics(client.Metrics{Attempts: attempts}), client.WithFailStatic(cfg.failStatic)))
	if err != nil {
		return err
	}
	defer c.Close()

	if !cfg.load() {
		out, err := c.TrimSpace(ctx, cfg.text)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, out)
		return err
	}

	// A summary only: every Call kept would grow the client by 64 bytes a
	// call (11 MB for 10 minutes at 300/s) and its heap goal by twice that.
	o := loadgen.Options{Callers: cfg.c, Rate: cfg.rate, Duration: cfg.duration, SummaryOnly: true}
	if cfg.duration == 0 {
		o.N = cfg.n
	}
	run := loadgen.Start(ctx, c.Endpoint(), cfg.text, o)
	if isTerminal(stderr) {
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
	if s.Failures > 0 {
		return fmt.Errorf("%d of %d requests failed", s.Failures, s.Requests)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted after %d requests", s.Requests)
	}
	return nil
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

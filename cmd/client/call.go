package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/loadgen"
)

func call(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	logger := level.NewFilter(log.NewLogfmtLogger(log.NewSyncWriter(stderr)), level.AllowWarn())
	logger = log.With(logger, "ts", log.DefaultTimestampUTC)
	c, err := client.New(cfg.client, client.WithLogger(logger))
	if err != nil {
		return err
	}
	defer c.Close()

	if cfg.n == 1 {
		out, err := c.TrimSpace(ctx, cfg.text)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, out)
		return err
	}

	calls, elapsed := loadgen.Start(ctx, c.Endpoint(), cfg.text, loadgen.Options{Callers: cfg.c, N: cfg.n}).Wait()
	s, samples := loadgen.Summarize(calls, elapsed)
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
		return fmt.Errorf("interrupted after %d of %d requests", s.Requests, cfg.n)
	}
	return nil
}

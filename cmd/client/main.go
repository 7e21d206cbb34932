// Command client calls the trim service through trimkit's client stack:
// Consul discovery, one connection per instance, round robin and retry.
// `client TEXT` prints TEXT trimmed; with -n above 1 it is a load generator
// that prints a summary. Run it with --help for its flags.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/trimkit/trimkit/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	cli.Exit("client", err)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, stdout)
	if err != nil {
		return err
	}
	return call(ctx, cfg, stdout, stderr)
}

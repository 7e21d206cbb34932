// Command client calls the trim service through trimkit's client stack:
// Consul discovery, one connection per instance, round robin and retry.
// `client TEXT` prints TEXT trimmed; with -n above 1 it is a load generator
// that prints a summary. Run it with --help for its flags.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/trimkit/trimkit/internal/cli"
	"github.com/trimkit/trimkit/sd"
)

func main() {
	// The first SIGINT or SIGTERM stops a load run (no new calls; those
	// in flight finish, then the summary) or cancels a single call; the
	// second cancels whatever is in flight.
	ctx, cancel := context.WithCancel(context.Background())
	stop, stopped := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		stopped()
		<-sigs
		cancel()
	}()
	err := run(ctx, stop, os.Args[1:], os.Stdout, os.Stderr)
	signal.Stop(sigs)
	cli.Exit("client", err)
}

// run runs the command with args. stop ends at the first signal, ctx at
// the second.
func run(ctx, stop context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, stdout)
	if err != nil {
		return err
	}
	err = call(ctx, stop, cfg, stdout, stderr)
	if errors.As(err, new(*sd.UnreachableError)) {
		// sd's hint is for any program; this one is run from trimkit's tree.
		err = fmt.Errorf("%w (`make up` starts a local one)", err)
	}
	return err
}

// Command trimsvc serves the trim service over gRPC and keeps it registered
// in Consul for as long as it is ready to serve. Run it with --help for its
// flags and their environment variables.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/trimkit/trimkit/internal/cli"
)

func main() {
	err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return
	case errors.Is(err, cli.ErrUsage):
		fmt.Fprintf(os.Stderr, "trimsvc: %v\n", err)
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "trimsvc: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, stdout)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, stderr)
}

// Command trimsvc serves the trim service over gRPC and keeps it registered
// in Consul for as long as it is ready to serve. Run it with --help for its
// flags and their environment variables.
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/trimkit/trimkit/internal/cli"
)

func main() {
	cli.Exit("trimsvc", run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, stdout)
	if err != nil {
		return err
	}
	if cfg.printDefinition {
		def, err := cfg.definition()
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s\n", def)
		return err
	}
	return serve(ctx, cfg, stderr)
}

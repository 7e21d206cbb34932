// Command demo shows trimkit at work on this machine: a local Consul dev
// agent, three trimsvc instances and load from cmd/client, with one instance
// stopped (SIGTERM) and another killed (SIGKILL) during the load, then one
// frozen (SIGSTOP). `demo up`
// leaves a local Consul and three instances running to poke at; `demo
// down` stops exactly what `up` started. Run it through `make demo`,
// `make up` and `make down`, which build the binaries it runs.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"syscall"

	"github.com/trimkit/trimkit/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	cli.Exit("demo", err)
}

const synopsis = `
usage: demo [run|up|down] [flags]

  run   (default) start a local Consul and 3 trimsvc instances, send load
        through cmd/client, SIGTERM one instance and SIGKILL another during
        the load; then, with two new instances, freeze one (SIGSTOP) under
        open-loop load and show the client ejecting it before Consul's check
        notices; print the outcome and tear everything down. Exit status 0
        only when no request failed.
  up    start a local Consul and 3 instances and leave them running; their
        PIDs and addresses go to -state.
  cluster
        start 3 Consul servers and 2 client agents on loopback (gossip
        encrypted) and 3 instances registered through client agent 1, and
        leave them running; print which agent callers should ask (client
        agent 2) and what to try.
  down  stop what up or cluster started, by the PIDs recorded in -state.`

type config struct {
	cmd        string
	bin, state string
	n, c       int
	instances  int
}

func parseConfig(args []string, stdout io.Writer) (config, error) {
	c := config{cmd: "run"}
	if len(args) > 0 && slices.Contains([]string{"run", "up", "cluster", "down"}, args[0]) {
		c.cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.StringVar(&c.bin, "bin", "bin", "directory holding consul, trimsvc and client")
	fs.StringVar(&c.state, "state", ".run", "directory for up/down: logs, data and recorded PIDs")
	fs.IntVar(&c.n, "n", 60000, "requests the load sends (run)")
	fs.IntVar(&c.c, "c", 8, "concurrent callers of the load (run)")
	fs.IntVar(&c.instances, "instances", 3, "trimsvc instances to start (at least 3 for run)")
	if err := cli.Parse(fs, args, "TRIMDEMO", synopsis, stdout); err != nil {
		return config{}, err
	}
	switch {
	case fs.NArg() > 0:
		return config{}, fmt.Errorf("%w: unexpected arguments %q", cli.ErrUsage, fs.Args())
	case c.n < 1 || c.c < 1:
		return config{}, fmt.Errorf("%w: -n and -c must be at least 1", cli.ErrUsage)
	case c.instances < 1 || (c.cmd == "run" && c.instances < 3):
		return config{}, fmt.Errorf("%w: -instances must be at least 3 for run, 1 for up", cli.ErrUsage)
	}
	return c, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, stdout)
	if err != nil {
		return err
	}
	switch cfg.cmd {
	case "up":
		return up(ctx, cfg, stdout)
	case "cluster":
		return cluster(ctx, cfg, stdout)
	case "down":
		return down(cfg, stdout)
	default:
		return demo(ctx, cfg, stdout)
	}
}

// Command trimdev is trimkit's development cluster and chaos tool. `trimdev
// run`, behind `make demo`, shows trimkit at work on this machine: a local
// Consul dev agent, three trimsvc instances and load from cmd/client, with
// one instance stopped (SIGTERM) and another killed (SIGKILL) during the
// load, then one frozen (SIGSTOP). `trimdev up` leaves a local Consul and
// three instances running to poke at, `trimdev cluster` a secure Consul
// cluster; `trimdev kill`, `stop` and `restart` act on one member of
// either, and `trimdev down` stops exactly what was started. `trimdev
// chaos` is a chaos soak against the cluster, `trimdev walkthrough` the
// cluster walkthrough's operations in a row. Run it through `make demo`,
// `make up`, `make cluster`, `make down`, `make chaos` and `make
// walkthrough`, which build the binaries it runs.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/trimkit/trimkit/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	cli.Exit("trimdev", err)
}

const synopsis = `
usage: trimdev [run|up|cluster|down|status|chaos|walkthrough] [flags]
       trimdev kill|stop|restart [flags] MEMBER...

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
        encrypted, TLS, default-deny ACLs) and 3 instances registered
        through client agent 1, and leave them running; print which agent
        callers should ask (client agent 2) and a walkthrough. A failed
        start stops what it started and keeps the logs in
        -state/failed-TIME/. -dcs 2: two such datacenters, dc1 and dc2,
        WAN-federated (dc1 the primary, whose ACLs dc2's servers
        replicate), each with its own instances; dc1's members keep their
        names, dc2's are dc2-server-N, dc2-client-N, dc2-trimsvc-N; callers
        ask dc1's client agent 2 for both datacenters.
  down  stop what up, cluster or chaos started, by the PIDs recorded in
        -state (SIGTERM, then SIGKILL after 10s, or after 2s when the
        servers have no leader); move their logs and state.json to
        -state/last/ (replacing the last down's) and remove the rest of
        what they left (Consul's data, certificates, tokens); other
        directories in -state (failed-TIME/ of failed starts, chaos/)
        stay.
  status
        print every member of what is up: its PID, whether it runs, and
        how the cluster sees it.
  kill, stop, restart MEMBER...
        SIGKILL, SIGTERM, or stop (SIGTERM) when running and start again,
        each member named: server-N, client-N, trimsvc-N, or leader (the
        server that leads now); with -dcs 2, dc2's too: dc2-server-N,
        dc2-client-N, dc2-trimsvc-N, dc2-leader. A member starts again on
        its address, ports and data directory; restart waits until a
        server is a voter again (or, while too few of its datacenter's
        servers run for a quorum, until it is up), a client agent has
        rejoined, an instance passes its check.
  chaos a chaos soak: start the cluster (in -state, default .run/chaos),
        send open-loop load (-rate calls/s, p2c) through client agent 2
        from this process, and for -duration inject faults. -sequence
        deck (the default): a shuffled deck, seeded (-seed), of single
        faults (instance SIGKILL, SIGTERM or SIGSTOP, a server's SIGKILL,
        the leader's, a client agent restarted (client-1 holds every
        instance), an instance's or the callers' ACL token rotated), each
        recovered before the next, and compound ones (two overlapping, or
        three back to back with no recovery between). -sequence
        walkthrough: the walkthrough's steps, in order, round after round.
        -dcs 2: on two datacenters (see cluster), the load calling dc1
        then dc2 (client.Config.Datacenters), dc1's members hit by the
        faults above, and the deck adds every instance of dc1 killed
        (SIGKILL, started again after a while), every instance of dc2
        killed, dc2's servers killed, and the WAN link cut (dc2's servers
        frozen with SIGSTOP, then SIGCONT). Print each fault with the
        calls it cost and this process's RSS, and a summary; stop
        everything it started. Exit status 0 only when no call failed.
  walkthrough
        start the cluster (in -state, default .run/walkthrough) and run
        every command of the walkthrough cluster prints, in its order,
        from the repository's root, with its first step's load in the
        background; stop everything it started. Exit status 0 only when
        every command did what the walkthrough says and no call failed.`

// memberCommands are the commands that take member names after their
// flags.
func memberCommands() []string { return []string{"kill", "stop", "restart"} }

type config struct {
	cmd        string
	bin, state string
	n, c       int
	instances  int
	dcs        int      // cluster, chaos: datacenters, WAN-federated
	tracing    bool     // up, cluster: Jaeger too, the instances' traces sent to it
	args       []string // member names
	// chaos
	duration time.Duration
	rate     float64
	seed     uint64
	sequence string
	json     string
}

func parseConfig(args []string, stdout io.Writer) (config, error) {
	c := config{cmd: "run"}
	commands := append([]string{"run", "up", "cluster", "down", "status", "chaos", "walkthrough"}, memberCommands()...)
	if len(args) > 0 && slices.Contains(commands, args[0]) {
		c.cmd, args = args[0], args[1:]
	}
	stateDir := ".run"
	if c.cmd == "chaos" || c.cmd == "walkthrough" {
		stateDir = filepath.Join(".run", c.cmd)
	}
	fs := flag.NewFlagSet("trimdev", flag.ContinueOnError)
	fs.StringVar(&c.bin, "bin", "bin", "directory holding consul, trimsvc and client")
	fs.StringVar(&c.state, "state", stateDir, "directory for up, cluster, chaos and the commands after them: logs, data and recorded PIDs")
	fs.IntVar(&c.n, "n", 60000, "requests the load sends (run)")
	fs.IntVar(&c.c, "c", 8, "concurrent callers of the load (run)")
	fs.IntVar(&c.instances, "instances", 3, "trimsvc instances to start, in each datacenter (at least 3 for run and chaos)")
	fs.IntVar(&c.dcs, "dcs", 1, "datacenters of the cluster: 1, or 2 WAN-federated, dc1 and dc2, each with its servers, client agents and instances (cluster, chaos; make cluster DCS=2)")
	fs.BoolVar(&c.tracing, "tracing", false, "also start Jaeger (bin/jaeger, `make jaeger`), send the instances' traces to it and print its UI's address (up, cluster; make up TRACING=1)")
	fs.DurationVar(&c.duration, "duration", 3*time.Minute, "how long the chaos soak injects faults (chaos)")
	fs.Float64Var(&c.rate, "rate", 300, "calls per second of the chaos soak's open-loop load (chaos)")
	fs.Uint64Var(&c.seed, "seed", 0, "the chaos soak's random seed, printed at its start to replay a run; 0 picks one (chaos)")
	fs.StringVar(&c.json, "json", "", "write the chaos soak's report to this file too, as JSON: every fault, and calls and failures by second (chaos)")
	fs.StringVar(&c.sequence, "sequence", sequenceDeck, "the chaos soak's faults: deck (every kind, single, overlapping and back to back, shuffled) or walkthrough (the walkthrough's steps, in order, round after round) (chaos)")
	if err := cli.Parse(fs, args, "TRIMDEMO", synopsis, stdout); err != nil {
		return config{}, err
	}
	c.args = fs.Args()
	member := slices.Contains(memberCommands(), c.cmd)
	switch {
	case fs.NArg() > 0 && !member:
		return config{}, fmt.Errorf("%w: unexpected arguments %q", cli.ErrUsage, fs.Args())
	case fs.NArg() == 0 && member:
		return config{}, fmt.Errorf("%w: demo %s: name at least one member (server-N, client-N, trimsvc-N, leader)", cli.ErrUsage, c.cmd)
	case c.n < 1 || c.c < 1:
		return config{}, fmt.Errorf("%w: -n and -c must be at least 1", cli.ErrUsage)
	case c.instances < 1 || ((c.cmd == "run" || c.cmd == "chaos") && c.instances < 3):
		return config{}, fmt.Errorf("%w: -instances must be at least 3 for run and chaos, 1 for up and cluster", cli.ErrUsage)
	case c.rate <= 0 || c.duration <= 0:
		return config{}, fmt.Errorf("%w: -rate and -duration must be positive", cli.ErrUsage)
	case c.sequence != sequenceDeck && c.sequence != sequenceWalkthrough:
		return config{}, fmt.Errorf("%w: -sequence %q: want %s or %s", cli.ErrUsage, c.sequence, sequenceDeck, sequenceWalkthrough)
	case c.dcs != 1 && c.dcs != 2:
		return config{}, fmt.Errorf("%w: -dcs %d: want 1 or 2", cli.ErrUsage, c.dcs)
	case c.dcs > 1 && c.cmd != "cluster" && c.cmd != "chaos":
		return config{}, fmt.Errorf("%w: -dcs %d: only cluster and chaos run several datacenters", cli.ErrUsage, c.dcs)
	case c.dcs > 1 && c.sequence == sequenceWalkthrough:
		return config{}, fmt.Errorf("%w: -sequence %s runs on one datacenter: its steps expect a caller of dc1 alone", cli.ErrUsage, sequenceWalkthrough)
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
	case "status", "kill", "stop", "restart":
		return members(ctx, cfg, stdout)
	case "chaos":
		return chaos(ctx, cfg, stdout)
	case "walkthrough":
		return walkthrough(ctx, cfg, stdout)
	default:
		return demo(ctx, cfg, stdout)
	}
}

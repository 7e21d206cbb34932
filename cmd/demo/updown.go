package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/trimkit/trimkit/internal/addrfile"
	"github.com/trimkit/trimkit/internal/localconsul"
	"github.com/trimkit/trimkit/internal/proc"
)

// state is what up and cluster record for down.
type state struct {
	Consul    []stateProc `json:"consul"`
	HTTPAddr  string      `json:"consul_http_addr"` // the agent callers ask
	DNSPort   int         `json:"consul_dns_port"`
	Instances []stateProc `json:"instances"`
}

type stateProc struct {
	Name string `json:"name,omitempty"`
	PID  int    `json:"pid"`
	Exe  string `json:"exe"` // absolute path, checked before signalling
	ID   string `json:"id,omitempty"`
	Addr string `json:"addr,omitempty"`
	Log  string `json:"log"`
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

// consulSetup is the Consul that up or cluster leaves running: where
// instances register and where callers ask.
type consulSetup struct {
	agents              []*localconsul.Agent
	svcAgent, callAgent *localconsul.Agent
}

// up leaves a local dev agent and cfg.instances trimsvc instances running.
func up(ctx context.Context, cfg config, w io.Writer) error {
	return leaveRunning(ctx, cfg, w, func(consulBin string) (consulSetup, error) {
		agent, err := localconsul.New(consulBin, cfg.state, localconsul.Options{Detach: true})
		if err != nil {
			return consulSetup{}, err
		}
		return consulSetup{agents: []*localconsul.Agent{agent}, svcAgent: agent, callAgent: agent}, agent.Start(30 * time.Second)
	}, printUp)
}

// cluster leaves 3 Consul servers, 2 client agents and cfg.instances
// trimsvc instances running; the instances register through client agent
// 1, callers ask client agent 2.
func cluster(ctx context.Context, cfg config, w io.Writer) error {
	return leaveRunning(ctx, cfg, w, func(consulBin string) (consulSetup, error) {
		c, err := localconsul.NewCluster(consulBin, filepath.Join(cfg.state, "consul"), localconsul.ClusterOptions{Detach: true})
		if err != nil {
			return consulSetup{}, err
		}
		setup := consulSetup{agents: c.Members(), svcAgent: c.Clients[0], callAgent: c.Clients[1]}
		return setup, c.Start(60 * time.Second)
	}, printCluster)
}

// leaveRunning starts Consul with start, then the instances, detached, and
// records what it started in cfg.state for down, whatever fails.
func leaveRunning(ctx context.Context, cfg config, w io.Writer, start func(consulBin string) (consulSetup, error), print func(io.Writer, consulSetup, state)) (err error) {
	if _, err := os.Stat(statePath(cfg.state)); err == nil {
		return fmt.Errorf("%s exists: already up? run `make down` first", statePath(cfg.state))
	}
	bins, err := binaries(cfg.bin)
	if err != nil {
		return err
	}
	// Record what /proc/PID/exe will show, so down can tell its own
	// processes from a reused PID.
	for _, p := range []*string{&bins.consul, &bins.trimsvc} {
		if *p, err = filepath.EvalSymlinks(*p); err != nil {
			return err
		}
		if *p, err = filepath.Abs(*p); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(cfg.state, 0o755); err != nil {
		return err
	}
	var st state
	// Whatever fails from here on, leave a state that down can clean up.
	defer func() {
		if werr := writeState(cfg.state, st); werr != nil {
			err = errors.Join(err, werr)
		}
		if err != nil {
			err = fmt.Errorf("%w (run `make down` to stop what started)", err)
		}
	}()
	setup, err := start(bins.consul)
	for _, a := range setup.agents {
		if a.PID() != 0 {
			st.Consul = append(st.Consul, stateProc{Name: a.Name, PID: a.PID(), Exe: bins.consul, Addr: a.HTTPAddr, Log: a.LogPath})
		}
	}
	if err != nil {
		return err
	}
	st.HTTPAddr, st.DNSPort = setup.callAgent.HTTPAddr, setup.callAgent.DNSPort
	for i := range cfg.instances {
		logPath := filepath.Join(cfg.state, fmt.Sprintf("trimsvc-%d.log", i+1))
		addrPath := filepath.Join(cfg.state, fmt.Sprintf("trimsvc-%d.addr.json", i+1))
		p, err := proc.StartDetached(bins.trimsvc, logPath, "-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0",
			"-consul-addr", setup.svcAgent.HTTPAddr, "-check-interval", "1s", "-addr-file", addrPath)
		if err != nil {
			return err
		}
		st.Instances = append(st.Instances, stateProc{PID: p, Exe: bins.trimsvc, Log: logPath})
		waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		a, err := addrfile.Wait(waitCtx, addrPath, nil)
		cancel()
		if err != nil {
			return fmt.Errorf("trimsvc %d (log %s): %w", i+1, logPath, err)
		}
		st.Instances[i].ID, st.Instances[i].Addr = a.ServiceID, a.Advertised
	}
	if err := waitPassing(ctx, setup.callAgent, cfg.instances); err != nil {
		return err
	}
	print(w, setup, st)
	return nil
}

func printUp(w io.Writer, setup consulSetup, st state) {
	fmt.Fprintf(w, "up: consul dev agent pid %d, UI http://%s/ui\n", st.Consul[0].PID, st.HTTPAddr)
	printInstances(w, st)
	fmt.Fprintf(w, `try:
  go run ./cmd/client -consul-addr %[1]s "  hello  world  "
  go run ./cmd/client -consul-addr %[1]s -n 10000 -c 8 x
  grpcurl -plaintext %[2]s list
  dig @127.0.0.1 -p %[3]d trimsvc.service.consul SRV
  curl -s 'http://%[1]s/v1/health/service/trimsvc?passing'
then: make down
`, st.HTTPAddr, st.Instances[0].Addr, st.DNSPort)
}

func printCluster(w io.Writer, setup consulSetup, st state) {
	fmt.Fprintln(w, "cluster: 3 consul servers and 2 client agents on loopback, gossip encrypted")
	for _, a := range setup.agents {
		rpc := "-"
		if strings.HasPrefix(a.Name, "server") {
			rpc = a.ServerAddr
		}
		fmt.Fprintf(w, "  %-9s pid %-7d http %-16s server rpc %-16s log %s\n", a.Name, a.PID(), a.HTTPAddr, rpc, a.LogPath)
	}
	fmt.Fprintf(w, "UI: http://%s/ui\n", setup.agents[0].HTTPAddr)
	fmt.Fprintf(w, "instances, registered through %s (%s):\n", setup.svcAgent.Name, setup.svcAgent.HTTPAddr)
	printInstances(w, st)
	fmt.Fprintf(w, `callers ask %[2]s: -consul-addr %[1]s
try:
  # load through client agent 2, and meanwhile:
  go run ./cmd/client -consul-addr %[1]s -rate 200 -duration 60s x
  # the leader's server rpc address (find its pid above), then kill it: a new leader in about 2s, no call fails
  curl -s http://%[1]s/v1/status/leader
  kill -9 <that pid>
  bin/consul members -http-addr=%[1]s
  # stop two servers: quorum lost; known instances keep answering, and a new caller still finds them (stale reads)...
  kill <pid> <pid>
  go run ./cmd/client -consul-addr %[1]s x
  # ... unless it insists on the leader
  go run ./cmd/client -consul-addr %[1]s -allow-stale=false x
then: make down
`, st.HTTPAddr, setup.callAgent.Name)
}

func printInstances(w io.Writer, st state) {
	for _, in := range st.Instances {
		fmt.Fprintf(w, "  %-32s %s (pid %d, log %s)\n", in.ID, in.Addr, in.PID, in.Log)
	}
}

func down(cfg config, w io.Writer) error {
	b, err := os.ReadFile(statePath(cfg.state))
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(w, "down: nothing is up (no %s)\n", statePath(cfg.state))
		return nil
	}
	if err != nil {
		return err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("read %s: %w", statePath(cfg.state), err)
	}
	var errs []error
	consul := slices.Clone(st.Consul)
	slices.Reverse(consul)                              // a cluster's client agents before its servers
	for _, p := range append(st.Instances, consul...) { // consul last
		stopped, err := proc.StopPID(p.PID, p.Exe, 10*time.Second)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(w, "down: %s pid %d: %s\n", filepath.Base(p.Exe), p.PID, stopped)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return os.RemoveAll(cfg.state)
}

func writeState(dir string, st state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(statePath(dir), b, 0o644)
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/trimkit/trimkit/internal/localconsul"
	"github.com/trimkit/trimkit/internal/localjaeger"
	"github.com/trimkit/trimkit/internal/pki"
)

// consulSetup is the Consul that up or cluster leaves running: where
// instances register and where callers ask, and, when it is secure, the
// flags instances need.
type consulSetup struct {
	agents []*localconsul.Agent
	// cluster is nil for a dev agent; with several datacenters, it is
	// the primary's, and federated are the others'.
	cluster             *localconsul.Cluster
	federated           []*localconsul.Cluster
	svcAgent, callAgent *localconsul.Agent
	// instances are the instances to start, when secure: each in its
	// datacenter, with its own flags. Else cfg.instances of them register
	// through svcAgent.
	instances []instanceSpec
	caller    *callerFiles
	clientEnv string // a file of variables for callers, when secure
}

// instanceSpec is an instance to start: its name (its service ID too),
// its datacenter ("" with one), the agent it registers through, and its
// own flags.
type instanceSpec struct {
	name, datacenter string
	agent            *localconsul.Agent
	args             []string
}

// datacenters are the names of the setup's datacenters, the primary
// first, when it has several; else nil.
func (s consulSetup) datacenters() []string {
	if len(s.federated) == 0 {
		return nil
	}
	var names []string
	for _, c := range append([]*localconsul.Cluster{s.cluster}, s.federated...) {
		names = append(names, c.Datacenter)
	}
	return names
}

// datacenterOf is the datacenter of a, one of the setup's agents, as the
// state records it: "" with one datacenter.
func (s consulSetup) datacenterOf(a *localconsul.Agent) string {
	if len(s.federated) == 0 {
		return ""
	}
	return a.Datacenter()
}

// up leaves a local dev agent and cfg.instances trimsvc instances running.
func up(ctx context.Context, cfg config, w io.Writer) error {
	f, setup, err := leaveRunning(ctx, cfg, w, func(consulBin string) (consulSetup, error) {
		agent, err := localconsul.New(consulBin, cfg.state, localconsul.Options{Detach: true})
		if err != nil {
			return consulSetup{}, err
		}
		return consulSetup{agents: []*localconsul.Agent{agent}, svcAgent: agent, callAgent: agent}, agent.Start(30 * time.Second)
	})
	if err != nil {
		return err
	}
	printUp(w, setup, f.st)
	return nil
}

// cluster leaves 3 Consul servers, 2 client agents and cfg.instances
// trimsvc instances running, with TLS everywhere and default-deny ACLs;
// the instances register through client agent 1, callers ask client agent
// 2. With cfg.dcs 2, it does so in two WAN-federated datacenters, and
// callers ask dc1's client agent 2 for both.
func cluster(ctx context.Context, cfg config, w io.Writer) error {
	f, setup, err := startCluster(ctx, cfg, w)
	if err != nil {
		return err
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	leader, err := f.leader(lctx)
	if err != nil || leader == "" {
		leader = "server-1" // the walkthrough names a server; any will do
	}
	printCluster(w, setup, f, leader)
	return nil
}

// startCluster starts what cluster leaves running.
func startCluster(ctx context.Context, cfg config, w io.Writer) (*fleet, consulSetup, error) {
	return leaveRunning(ctx, cfg, w, func(consulBin string) (consulSetup, error) {
		dirs := []string{filepath.Join(cfg.state, "consul")}
		for i := 2; i <= cfg.dcs; i++ {
			dirs = append(dirs, filepath.Join(cfg.state, fmt.Sprintf("consul-dc%d", i)))
		}
		fed, err := localconsul.NewFederation(consulBin, dirs, localconsul.ClusterOptions{Detach: true, Secure: true})
		if err != nil {
			return consulSetup{}, err
		}
		c := fed.Datacenters[0]
		setup := consulSetup{agents: fed.Members(), cluster: c, federated: fed.Datacenters[1:], svcAgent: c.Clients[0], callAgent: c.Clients[1]}
		if err := fed.Start(time.Duration(cfg.dcs) * 60 * time.Second); err != nil {
			return setup, err
		}
		return secure(ctx, cfg, fed, setup)
	})
}

// secure sets up the cluster's ACLs and writes what instances and callers
// need: least-privilege token files (one per instance, for its own load
// report key), a CA of the service's own apart from Consul's, with a
// server certificate per instance and a client certificate for callers
// (mutual TLS), and client.env with the variables that point cmd/client
// (or the consul CLI) at client agent 2 with all of it. With several
// datacenters, the tokens are made in the primary, global, and known to
// every datacenter's servers before any is used; each datacenter's
// instances register through its client agent 1, and client.env names
// the datacenters to call (TRIMCLIENT_DATACENTERS).
func secure(ctx context.Context, cfg config, fed *localconsul.Federation, setup consulSetup) (consulSetup, error) {
	dir := cfg.state
	c := fed.Datacenters[0]
	api, err := c.Servers[0].API()
	if err != nil {
		return setup, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tokens, err := c.Security.SetupACL(ctx, api, "trimsvc")
	if err != nil {
		return setup, err
	}
	files := map[string]string{"client.token": tokens.Client, "management.token": c.Security.ManagementToken}
	for name, token := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(token+"\n"), 0o600); err != nil {
			return setup, err
		}
	}
	sec := c.Security
	serviceCA, err := pki.NewCA(filepath.Join(dir, "service-ca"), "service-ca")
	if err != nil {
		return setup, err
	}
	caller, err := serviceCA.Issue(pki.Leaf{Name: "caller", Usage: pki.Client})
	if err != nil {
		return setup, err
	}
	// Every instance's token and certificate, made before any instance
	// starts, and known to every server before any is used.
	secrets := []string{tokens.Client}
	var servers []*localconsul.Agent
	for _, dc := range fed.Datacenters {
		servers = append(servers, dc.Servers...)
		agent := dc.Clients[0]
		for i := range cfg.instances {
			id := fmt.Sprintf("%strimsvc-%d", memberPrefix(setup, dc), i+1)
			token, err := sec.InstanceToken(api, "trimsvc", id, agent.Name)
			if err != nil {
				return setup, err
			}
			secrets = append(secrets, token)
			tokenFile := abs(filepath.Join(dir, id+".token"))
			if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
				return setup, err
			}
			cert, err := serviceCA.LoopbackServer(id)
			if err != nil {
				return setup, err
			}
			setup.instances = append(setup.instances, instanceSpec{name: id, datacenter: setup.datacenterOf(agent), agent: agent,
				args: []string{"-service-id", id,
					"-consul-ca-file", sec.CA.CertFile, "-consul-client-cert", sec.CLICertFile, "-consul-client-key", sec.CLIKeyFile,
					"-consul-token-file", tokenFile,
					"-tls-cert-file", abs(cert.CertFile), "-tls-key-file", abs(cert.KeyFile), "-tls-client-ca-file", abs(serviceCA.File),
					// Consul's check presents the agent's certificate, of Consul's
					// CA: let in for health checks only; and the agent cannot
					// verify a certificate of the service's CA.
					"-tls-check-ca-file", sec.CA.CertFile, "-check-tls-skip-verify"}})
		}
	}
	if err := localconsul.WaitTokens(ctx, servers, secrets...); err != nil {
		return setup, err
	}
	setup.caller = &callerFiles{ConsulAddr: setup.callAgent.URL(), ConsulCA: abs(sec.CA.CertFile),
		ConsulCert: abs(sec.CLICertFile), ConsulKey: abs(sec.CLIKeyFile), TokenFile: abs(filepath.Join(dir, "client.token")),
		TLSCA: abs(serviceCA.File), TLSCert: abs(caller.CertFile), TLSKey: abs(caller.KeyFile), Datacenters: setup.datacenters()}
	setup.clientEnv = filepath.Join(dir, "client.env")
	cf := setup.caller
	env := fmt.Sprintf(`export CONSUL_HTTP_ADDR=%s
export CONSUL_CACERT=%s
export CONSUL_CLIENT_CERT=%s
export CONSUL_CLIENT_KEY=%s
export CONSUL_HTTP_TOKEN_FILE=%s
export TRIMCLIENT_TLS_CA_FILE=%s
export TRIMCLIENT_TLS_CERT_FILE=%s
export TRIMCLIENT_TLS_KEY_FILE=%s
`, cf.ConsulAddr, cf.ConsulCA, cf.ConsulCert, cf.ConsulKey, cf.TokenFile, cf.TLSCA, cf.TLSCert, cf.TLSKey)
	if len(cf.Datacenters) > 0 {
		env += fmt.Sprintf("export TRIMCLIENT_DATACENTERS=%s\n", strings.Join(cf.Datacenters, ","))
	}
	return setup, os.WriteFile(setup.clientEnv, []byte(env), 0o600)
}

// memberPrefix is what the names of c's members start with: nothing in
// the primary datacenter (or the only one), "dc2-" in dc2.
func memberPrefix(setup consulSetup, c *localconsul.Cluster) string {
	if c == setup.cluster {
		return ""
	}
	return c.Datacenter + "-"
}

// abs is p made absolute, or p when that fails.
func abs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// leaveRunning starts Consul with start, then the instances, detached, and
// records what it started in cfg.state for the member commands and down.
// When anything fails it stops what started and keeps the logs in
// cfg.state/failed-TIME/.
func leaveRunning(ctx context.Context, cfg config, w io.Writer, start func(consulBin string) (consulSetup, error)) (_ *fleet, _ consulSetup, err error) {
	if _, err := os.Stat(statePath(cfg.state)); err == nil {
		return nil, consulSetup{}, fmt.Errorf("%s exists: already up? run `make down` first (or `bin/trimdev down -state %s`)", statePath(cfg.state), cfg.state)
	}
	bins, err := binaries(cfg.bin)
	if err != nil {
		return nil, consulSetup{}, err
	}
	// Record what /proc/PID/exe will show, so that the member commands
	// and down can tell their own processes from a reused PID.
	for _, p := range []*string{&bins.consul, &bins.trimsvc} {
		if *p, err = filepath.EvalSymlinks(*p); err != nil {
			return nil, consulSetup{}, err
		}
		if *p, err = filepath.Abs(*p); err != nil {
			return nil, consulSetup{}, err
		}
	}
	if err := os.MkdirAll(cfg.state, 0o755); err != nil {
		return nil, consulSetup{}, err
	}
	f := &fleet{dir: cfg.state, bins: bins}
	st := &f.st
	// Whatever fails from here on, stop what started and keep the logs.
	defer func() {
		if werr := writeState(cfg.state, *st); werr != nil {
			err = errors.Join(err, werr)
		}
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, f.failed(w))
		}
	}()
	setup, err := start(bins.consul)
	f.cluster, f.federated = setup.cluster, setup.federated
	if setup.cluster != nil {
		st.Cluster = abs(filepath.Join(cfg.state, "consul"))
	}
	for _, c := range setup.federated {
		st.Federated = append(st.Federated, c.Dir())
	}
	st.Datacenters = setup.datacenters()
	for _, a := range setup.agents {
		if a.PID() != 0 {
			st.Consul = append(st.Consul, stateProc{Name: a.Name, Datacenter: setup.datacenterOf(a), PID: a.PID(), Exe: bins.consul, Addr: a.HTTPAddr, Log: a.LogPath})
		}
	}
	if err != nil {
		return f, setup, err
	}
	st.HTTPAddr, st.DNSPort, st.Caller = setup.callAgent.URL(), setup.callAgent.DNSPort, setup.caller
	var env []string
	if cfg.tracing {
		if env, err = startJaeger(cfg, st); err != nil {
			return f, setup, err
		}
	}
	specs := setup.instances
	if len(specs) == 0 {
		for i := range cfg.instances {
			specs = append(specs, instanceSpec{name: fmt.Sprintf("trimsvc-%d", i+1), agent: setup.svcAgent})
		}
	}
	for i, in := range specs {
		st.Instances = append(st.Instances, stateProc{Name: in.name, Datacenter: in.datacenter, Exe: bins.trimsvc,
			Log: abs(filepath.Join(cfg.state, in.name+".log")), Args: instanceArgs(in.agent.URL(), in.args...), Env: env})
		if _, err := startInstance(ctx, bins.trimsvc, cfg.state, &st.Instances[i]); err != nil {
			return f, setup, err
		}
	}
	// Consul holds back a failed sync's retry for up to 30s; give it that
	// and more before calling the start failed.
	var ids []string
	for _, in := range st.Instances {
		ids = append(ids, in.ID)
	}
	if err := f.waitPassing(ctx, 45*time.Second, ids...); err != nil {
		return f, setup, fmt.Errorf("passing instances of trimsvc: %w", err)
	}
	return f, setup, nil
}

// failed stops what a failed start started and keeps its logs; it says
// where.
func (f *fleet) failed(w io.Writer) string {
	lines, err := f.stopAll(func(stateProc) time.Duration { return downGraceNoLeader })
	for _, l := range lines {
		fmt.Fprintf(w, "stopped after the failed start: %s\n", l)
	}
	if err != nil {
		return fmt.Sprintf("stopping what started failed too (%v): run `make down`", err)
	}
	f.closeClusters() // their port blocks, held by this process
	kept, err := keepLogs(f.dir, time.Now())
	if err != nil {
		return fmt.Sprintf("everything started is stopped; %v", err)
	}
	if err := removeState(f.dir); err != nil {
		return fmt.Sprintf("everything started is stopped, the logs are in %s; %v", kept, err)
	}
	return fmt.Sprintf("everything started is stopped; the logs are in %s", kept)
}

func printUp(w io.Writer, setup consulSetup, st state) {
	fmt.Fprintf(w, "up: consul dev agent pid %d, UI %s/ui\n", st.Consul[0].PID, st.HTTPAddr)
	printInstances(w, st)
	printTracing(w, st)
	fmt.Fprintf(w, `try:
  go run ./cmd/client -consul-addr %[1]s "  hello  world  "
  go run ./cmd/client -consul-addr %[1]s -n 10000 -c 8 x
  go run ./cmd/client -consul-addr %[1]s -rate 50 -duration 10m -http-addr 127.0.0.1:8977 x
      then open http://127.0.0.1:8977/debug/trimkit: what the caller sees of each instance, live
  curl -s '%[1]s/v1/health/service/trimsvc?passing'
`, st.HTTPAddr)
	// The comments in a column of their own, whatever the addresses.
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintf(tw, "  grpcurl -plaintext %s list\t# optional: needs grpcurl\n", st.Instances[0].Addr)
	fmt.Fprintf(tw, "  dig @127.0.0.1 -p %d trimsvc.service.consul SRV\t# optional: needs dig (dnsutils)\n", st.DNSPort)
	fmt.Fprintf(tw, "  bin/trimdev restart trimsvc-1\t# stops an instance (SIGTERM) and starts it again on its address\n")
	_ = tw.Flush()
	fmt.Fprintln(w, "then: make down   (keeps the logs of what it stops in .run/last/)")
}

// startJaeger starts Jaeger (cfg.bin/jaeger) for -tracing, detached,
// records it in st, and returns the environment that sends an instance's
// traces to it.
func startJaeger(cfg config, st *state) ([]string, error) {
	bin, err := filepath.Abs(filepath.Join(cfg.bin, "jaeger"))
	if err == nil {
		bin, err = filepath.EvalSymlinks(bin)
	}
	if err != nil {
		return nil, fmt.Errorf("-tracing needs %s: run `make jaeger` (%w)", filepath.Join(cfg.bin, "jaeger"), err)
	}
	j, err := localjaeger.Start(bin, cfg.state, true, time.Minute)
	if err != nil {
		return nil, err
	}
	st.Jaeger = &stateProc{Name: "jaeger", PID: j.Cmd.Process.Pid, Exe: bin, Addr: j.Query, Log: abs(filepath.Join(cfg.state, "jaeger.log"))}
	st.OTLP = "http://" + j.OTLPHTTP
	return []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + st.OTLP, "OTEL_BSP_SCHEDULE_DELAY=1000"}, nil
}

// printTracing says where the traces are, with -tracing.
func printTracing(w io.Writer, st state) {
	if st.Jaeger == nil {
		return
	}
	fmt.Fprintf(w, "traces: Jaeger http://%s/ (pid %d, log %s): its query API, /api/traces?service=trimsvc (the UI's assets are not in Jaeger's Go module:\n", st.Jaeger.Addr, st.Jaeger.PID, st.Jaeger.Log)
	fmt.Fprintf(w, "  its page is a placeholder); the instances send their traces there, and a caller's go there too with\n")
	fmt.Fprintf(w, "  OTEL_EXPORTER_OTLP_ENDPOINT=%s go run ./cmd/client -consul-addr %s -n 100 x\n", st.OTLP, st.HTTPAddr)
}

// printInstances prints a line per instance, in columns as wide as their
// widest cell.
func printInstances(w io.Writer, st state) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, in := range st.Instances {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t(pid %d, log %s)\n", in.Name, in.ID, in.Addr, in.PID, in.Log)
	}
	_ = tw.Flush() // as the lines around it, written to the terminal
}

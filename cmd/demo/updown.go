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
	"github.com/trimkit/trimkit/internal/pki"
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
// instances register and where callers ask, and, when it is secure, the
// flags instances need.
type consulSetup struct {
	agents              []*localconsul.Agent
	svcAgent, callAgent *localconsul.Agent
	// instanceArgs are each instance's own flags, when secure.
	instanceArgs [][]string
	clientEnv    string // a file of variables for callers, when secure
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
// trimsvc instances running, with TLS everywhere and default-deny ACLs;
// the instances register through client agent 1, callers ask client agent
// 2.
func cluster(ctx context.Context, cfg config, w io.Writer) error {
	return leaveRunning(ctx, cfg, w, func(consulBin string) (consulSetup, error) {
		c, err := localconsul.NewCluster(consulBin, filepath.Join(cfg.state, "consul"), localconsul.ClusterOptions{Detach: true, Secure: true})
		if err != nil {
			return consulSetup{}, err
		}
		setup := consulSetup{agents: c.Members(), svcAgent: c.Clients[0], callAgent: c.Clients[1]}
		if err := c.Start(60 * time.Second); err != nil {
			return setup, err
		}
		return secure(ctx, cfg, c, setup)
	}, printCluster)
}

// secure sets up the cluster's ACLs and writes what instances and callers
// need: least-privilege token files (one per instance, for its own load
// report key), a CA of the service's own apart from Consul's, with a
// server certificate per instance and a client certificate for callers
// (mutual TLS), and client.env with the variables that point cmd/client
// (or the consul CLI) at client agent 2 with all of it.
func secure(ctx context.Context, cfg config, c *localconsul.Cluster, setup consulSetup) (consulSetup, error) {
	dir := cfg.state
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
	args := make([][]string, cfg.instances)
	secrets := []string{tokens.Client}
	for i := range args {
		id := fmt.Sprintf("trimsvc-%d", i+1)
		token, err := sec.InstanceToken(api, "trimsvc", id, setup.svcAgent.Name)
		if err != nil {
			return setup, err
		}
		secrets = append(secrets, token)
		tokenFile := filepath.Join(dir, id+".token")
		if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
			return setup, err
		}
		cert, err := serviceCA.LoopbackServer(id)
		if err != nil {
			return setup, err
		}
		args[i] = []string{"-service-id", id,
			"-consul-ca-file", sec.CA.CertFile, "-consul-client-cert", sec.CLICertFile, "-consul-client-key", sec.CLIKeyFile,
			"-consul-token-file", tokenFile,
			"-tls-cert-file", cert.CertFile, "-tls-key-file", cert.KeyFile, "-tls-client-ca-file", serviceCA.File,
			// Consul's check presents the agent's certificate, of Consul's
			// CA: let in for health checks only; and the agent cannot
			// verify a certificate of the service's CA.
			"-tls-check-ca-file", sec.CA.CertFile, "-check-tls-skip-verify"}
	}
	if err := localconsul.WaitTokens(ctx, c.Servers, secrets...); err != nil {
		return setup, err
	}
	setup.instanceArgs = args
	setup.clientEnv = filepath.Join(dir, "client.env")
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	env := fmt.Sprintf(`export CONSUL_HTTP_ADDR=%s
export CONSUL_CACERT=%s
export CONSUL_CLIENT_CERT=%s
export CONSUL_CLIENT_KEY=%s
export CONSUL_HTTP_TOKEN_FILE=%s
export TRIMCLIENT_TLS_CA_FILE=%s
export TRIMCLIENT_TLS_CERT_FILE=%s
export TRIMCLIENT_TLS_KEY_FILE=%s
`, setup.callAgent.URL(), abs(sec.CA.CertFile), abs(sec.CLICertFile), abs(sec.CLIKeyFile), abs(filepath.Join(dir, "client.token")),
		abs(serviceCA.File), abs(caller.CertFile), abs(caller.KeyFile))
	return setup, os.WriteFile(setup.clientEnv, []byte(env), 0o600)
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
	st.HTTPAddr, st.DNSPort = setup.callAgent.URL(), setup.callAgent.DNSPort
	for i := range cfg.instances {
		logPath := filepath.Join(cfg.state, fmt.Sprintf("trimsvc-%d.log", i+1))
		addrPath := filepath.Join(cfg.state, fmt.Sprintf("trimsvc-%d.addr.json", i+1))
		var extra []string
		if i < len(setup.instanceArgs) {
			extra = setup.instanceArgs[i]
		}
		p, err := proc.StartDetached(bins.trimsvc, logPath, append([]string{"-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0",
			"-consul-addr", setup.svcAgent.URL(), "-check-interval", "1s", "-addr-file", addrPath}, extra...)...)
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
	fmt.Fprintf(w, "up: consul dev agent pid %d, UI %s/ui\n", st.Consul[0].PID, st.HTTPAddr)
	printInstances(w, st)
	fmt.Fprintf(w, `try:
  go run ./cmd/client -consul-addr %[1]s "  hello  world  "
  go run ./cmd/client -consul-addr %[1]s -n 10000 -c 8 x
  grpcurl -plaintext %[2]s list
  dig @127.0.0.1 -p %[3]d trimsvc.service.consul SRV
  curl -s '%[1]s/v1/health/service/trimsvc?passing'
then: make down
`, st.HTTPAddr, st.Instances[0].Addr, st.DNSPort)
}

func printCluster(w io.Writer, setup consulSetup, st state) {
	fmt.Fprintln(w, "cluster: 3 consul servers and 2 client agents on loopback: gossip encrypted, TLS everywhere (HTTPS only,")
	fmt.Fprintln(w, "client certificates required), ACLs default-deny")
	for _, a := range setup.agents {
		rpc := "-"
		if strings.HasPrefix(a.Name, "server") {
			rpc = a.ServerAddr
		}
		fmt.Fprintf(w, "  %-9s pid %-7d %-24s server rpc %-16s log %s\n", a.Name, a.PID(), a.URL(), rpc, a.LogPath)
	}
	fmt.Fprintf(w, "instances, registered through %s over TLS, each with a token of its own, serving mutual TLS with the service CA:\n", setup.svcAgent.Name)
	printInstances(w, st)
	dir := filepath.Dir(setup.clientEnv)
	fmt.Fprintf(w, `files in %[3]s:
  trimsvc-N.token   instance N's token (-consul-token-file): service:write on trimsvc, key:write on its own
                    load report key only, session:write on its node only
  client.token      service:read on trimsvc, node:read: what callers use (CONSUL_HTTP_TOKEN_FILE)
  management.token  the bootstrap token: for the UI and the consul CLI, not for services
  client.env        the variables for callers: client agent 2, its CA, a client certificate, client.token,
                    and the service CA and client certificate for calling the instances (TRIMCLIENT_TLS_*)
  consul/ca/        Consul's CA (consul tls ca create) and the agents' and CLI's certificates (consul tls cert create)
  service-ca/       the service's own CA, apart from Consul's: each instance's server certificate (its
                    address, server-auth usage) and the callers' client certificate (client-auth usage)
UI: %[1]s/ui (log in with management.token)
callers ask %[2]s; try:
  source %[4]s
  # load through client agent 2, and meanwhile:
  go run ./cmd/client -rate 200 -duration 60s x
  # the leader's server rpc address (find its pid above), then kill it: a new leader in about 2s, no call fails
  curl -s --cacert $CONSUL_CACERT --cert $CONSUL_CLIENT_CERT --key $CONSUL_CLIENT_KEY $CONSUL_HTTP_ADDR/v1/status/leader
  kill -9 <that pid>
  CONSUL_HTTP_TOKEN_FILE=%[3]s/management.token bin/consul members
  # stop two servers: quorum lost; known instances keep answering, and a new caller still finds them (stale reads)...
  kill <pid> <pid>
  go run ./cmd/client x
  # ... unless it insists on the leader
  go run ./cmd/client -read leader x
  # without a token, or without the instances' CA: refused, and told why
  CONSUL_HTTP_TOKEN_FILE= go run ./cmd/client x
  TRIMCLIENT_TLS_CA_FILE= TRIMCLIENT_TLS_CERT_FILE= TRIMCLIENT_TLS_KEY_FILE= go run ./cmd/client x
then: make down
`, setup.agents[0].URL(), setup.callAgent.Name, dir, setup.clientEnv)
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

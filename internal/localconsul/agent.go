package localconsul

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
)

// Agent is a Consul agent on 127.0.0.1: a dev agent (Options.Member nil),
// or one member of a Cluster.
type Agent struct {
	// Name is the agent's node name.
	Name string
	// HTTPAddr is the HTTP API (and UI) address, host:port.
	HTTPAddr string
	// DNSPort is the DNS port (UDP and TCP).
	DNSPort int
	// SerfLANAddr is the gossip address other agents join, host:port.
	SerfLANAddr string
	// ServerAddr is the server RPC address, host:port, as
	// /v1/status/leader names a leader.
	ServerAddr string
	// SerfWANAddr is the WAN gossip address of a server, host:port.
	SerfWANAddr string
	// LogPath is the agent's log file.
	LogPath string

	bin, dir, config string
	opts             Options
	certFile         string // its own, with Security
	keyFile          string
	cmd              *exec.Cmd
	exited           chan struct{}
	started          bool // once: its ports are its own from then on
	// ports are http, dns, grpc, serf_lan, serf_wan and server, claimed
	// until Close, whether the agent runs or not.
	ports *portBlock

	apiMu     sync.Mutex
	apiClient *api.Client // API's, reused until the ports change
}

// Options for New.
type Options struct {
	// Detach starts the agent in its own session so that it outlives the
	// process that started it (make up). Otherwise it dies with its parent.
	Detach bool
	// Member, when set, makes the agent a member of a cluster rather than
	// a dev agent.
	Member *Member
	// Security, when set, turns on TLS (HTTPS only) and default-deny ACLs.
	Security *Security
	// ConfigDir, when set, is passed as -config-dir: service definitions
	// in it are the agent's own.
	ConfigDir string
	// Datacenter names the agent's datacenter (default dc1), and JoinWAN
	// the WAN gossip addresses (another datacenter's servers'
	// SerfWANAddr) that a server, or a dev agent, federates with: two dev
	// agents are two datacenters. A cluster's members get theirs from
	// their Federation.
	Datacenter string
	JoinWAN    []string
	// PrimaryDatacenter, when set, names the federation's primary
	// datacenter, whose servers hold the ACLs; the servers of any other
	// datacenter replicate them (with Security's ReplicationToken).
	PrimaryDatacenter string
}

// Member is how an agent takes part in a cluster.
type Member struct {
	Name            string
	Server          bool
	BootstrapExpect int      // servers only
	RetryJoin       []string // serf LAN addresses of other members
	Encrypt         string   // gossip key, from `consul keygen`
}

// New prepares an agent that runs bin with its data and log in dir, on free
// loopback ports. Start it with Start.
func New(bin, dir string, opts Options) (*Agent, error) {
	a := &Agent{
		Name:    "trimkit-local",
		LogPath: filepath.Join(dir, "consul.log"),
		bin:     bin,
		dir:     dir,
		config:  filepath.Join(dir, "agent.hcl"),
		opts:    opts,
	}
	if opts.Member != nil {
		a.Name = opts.Member.Name
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if sec := opts.Security; sec != nil {
		kind := "server"
		if opts.Member != nil && !opts.Member.Server {
			kind = "client"
		}
		var err error
		if a.certFile, a.keyFile, err = sec.CA.CertFor(kind, opts.Datacenter); err != nil {
			return nil, err
		}
	}
	if err := a.pickPorts(); err != nil {
		a.ports.Close()
		return nil, err
	}
	return a, nil
}

// pickPorts claims free ports, giving back any it had, and writes the
// agent's configuration.
func (a *Agent) pickPorts() error {
	if err := a.ports.Close(); err != nil {
		return fmt.Errorf("give back ports: %w", err)
	}
	block, err := claimPorts(6)
	if err != nil {
		return err
	}
	a.ports = block
	a.apiMu.Lock()
	a.apiClient = nil // for the old HTTP port
	a.apiMu.Unlock()
	ports := block.ports
	a.HTTPAddr, a.DNSPort = fmt.Sprintf("127.0.0.1:%d", ports[0]), ports[1]
	a.SerfLANAddr = fmt.Sprintf("127.0.0.1:%d", ports[3])
	a.SerfWANAddr = fmt.Sprintf("127.0.0.1:%d", ports[4])
	a.ServerAddr = fmt.Sprintf("127.0.0.1:%d", ports[5])
	return a.writeConfig()
}

func (a *Agent) writeConfig() error {
	ports := a.ports.ports
	httpPorts := fmt.Sprintf("http = %d", ports[0])
	if a.opts.Security != nil {
		httpPorts = fmt.Sprintf("http = -1\n  https = %d", ports[0])
	}
	var b strings.Builder
	fmt.Fprintf(&b, `data_dir = %q
node_name = %q
bind_addr = "127.0.0.1"
client_addr = "127.0.0.1"
advertise_addr = "127.0.0.1"
disable_update_check = true
ports {
  %s
  dns = %d
  grpc = %d
  grpc_tls = -1
  serf_lan = %d
  serf_wan = %d
  server = %d
}
`, filepath.Join(a.dir, "data"), a.Name, httpPorts, ports[1], ports[2], ports[3], ports[4], ports[5])
	if sec := a.opts.Security; sec != nil {
		b.WriteString(sec.hcl(a.certFile, a.keyFile, a.opts.Member == nil || a.opts.Member.Server, a.secondary()))
	}
	if a.opts.Datacenter != "" {
		fmt.Fprintf(&b, "datacenter = %q\n", a.opts.Datacenter)
	}
	if a.opts.PrimaryDatacenter != "" {
		fmt.Fprintf(&b, "primary_datacenter = %q\n", a.opts.PrimaryDatacenter)
	}
	if len(a.opts.JoinWAN) > 0 {
		fmt.Fprintf(&b, "retry_join_wan = [%s]\nretry_interval_wan = \"1s\"\n", quoted(a.opts.JoinWAN))
	}
	if m := a.opts.Member; m != nil {
		fmt.Fprintf(&b, `server = %t
retry_join = [%s]
retry_interval = "1s"
encrypt = %q
ui_config { enabled = true }
# Consul's production guidance: a leader is replaced in about 2s, not 10s.
performance { raft_multiplier = 1 }
`, m.Server, quoted(m.RetryJoin), m.Encrypt)
		if m.Server {
			fmt.Fprintf(&b, "bootstrap_expect = %d\n", m.BootstrapExpect)
		}
	}
	if err := os.WriteFile(a.config, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("write consul config: %w", err)
	}
	return nil
}

// Datacenter is the agent's datacenter: dc1 unless its options named
// another.
func (a *Agent) Datacenter() string {
	if a.opts.Datacenter == "" {
		return defaultDatacenter
	}
	return a.opts.Datacenter
}

// secondary reports whether the agent is in a datacenter other than its
// federation's primary.
func (a *Agent) secondary() bool {
	return a.opts.PrimaryDatacenter != "" && a.opts.PrimaryDatacenter != a.Datacenter()
}

// defaultDatacenter is Consul's datacenter when none is configured.
const defaultDatacenter = "dc1"

func quoted(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// setRetryJoin rewrites the configuration with the members to join.
func (a *Agent) setRetryJoin(addrs []string) error {
	a.opts.Member.RetryJoin = addrs
	return a.writeConfig()
}

// setJoinWAN rewrites the configuration with the WAN addresses to join.
func (a *Agent) setJoinWAN(addrs []string) error {
	a.opts.JoinWAN = addrs
	return a.writeConfig()
}

// errPortTaken marks an agent that could not bind one of its ports.
var errPortTaken = errors.New("a port was taken before consul could bind it")

// Start starts the agent and waits, at most timeout, until it is up: a dev
// agent until it has elected itself leader (with an empty data directory:
// a dev agent keeps nothing across restarts), a cluster member until its
// HTTP API answers (its data directory is kept, as a real agent's is). A
// claimed block keeps out only processes that claim blocks too, and where
// there is no room below the ephemeral range nothing is claimed, so another
// process can take a port first: on its first start the agent then gets
// new ports and tries again, a few times. A restart keeps its ports
// (callers know its address).
func (a *Agent) Start(timeout time.Duration) error {
	for tries := 1; ; tries++ {
		err := a.start(timeout)
		if !errors.Is(err, errPortTaken) || a.started || tries == 5 {
			if err == nil {
				a.started = true
			}
			return err
		}
		if err := a.pickPorts(); err != nil {
			return err
		}
	}
}

func (a *Agent) start(timeout time.Duration) error {
	if a.Running() {
		return errors.New("consul agent already started")
	}
	a.cmd = nil // it exited (or was killed) by itself: start it again
	args := []string{"agent", "-config-file", a.config}
	if a.opts.ConfigDir != "" {
		args = append(args, "-config-dir", a.opts.ConfigDir)
	}
	if a.opts.Member == nil {
		args = append(args, "-dev")
		if err := a.WipeData(); err != nil {
			return err
		}
	}
	logFile, err := os.OpenFile(a.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open consul log: %w", err)
	}
	var logStart int64 // this run's part of the log starts here
	if info, err := logFile.Stat(); err == nil {
		logStart = info.Size()
	}
	cmd := exec.Command(a.bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if a.opts.Detach {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start consul: %w", err)
	}
	a.cmd, a.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) {
		_ = cmd.Wait()
		logFile.Close()
		close(exited)
	}(a.exited)
	deadline := time.Now().Add(timeout)
	wait := a.waitLeader
	if a.opts.Member != nil {
		wait = a.waitUp
	}
	err = wait(timeout)
	if err == nil && a.opts.Member == nil && a.opts.Security != nil {
		err = a.devAgentToken(deadline)
	}
	if err != nil {
		_ = a.Stop()
		if b, rerr := os.ReadFile(a.LogPath); rerr == nil && int64(len(b)) >= logStart &&
			strings.Contains(string(b[logStart:]), "address already in use") {
			err = fmt.Errorf("%w: %w", errPortTaken, err)
		}
		return fmt.Errorf("consul %s at %s: %w\n%s", a.Name, a.HTTPAddr, err, a.LogTail())
	}
	return nil
}

// devAgentToken creates the agents' token in a secure dev agent, which
// has just elected itself, and sets it on the agent again so that it syncs
// at once: its first sync, made before the token existed, failed, and it
// would otherwise hold back the services registered next for 15 to 30
// seconds (see Security.useAgentToken).
func (a *Agent) devAgentToken(deadline time.Time) error {
	c, err := a.API()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if err := a.opts.Security.CreateAgentToken(ctx, c); err != nil {
		return err
	}
	return a.opts.Security.useAgentToken(a)
}

// WipeData removes the agent's data directory; it must not be running.
func (a *Agent) WipeData() error {
	if err := os.RemoveAll(filepath.Join(a.dir, "data")); err != nil {
		return fmt.Errorf("clear consul data dir: %w", err)
	}
	return nil
}

// Running reports whether the agent's process runs.
func (a *Agent) Running() bool {
	if a.cmd == nil {
		return false
	}
	select {
	case <-a.exited:
		return false
	default:
		return true
	}
}

// PID is the agent's process ID, 0 when not running.
func (a *Agent) PID() int {
	if a.cmd == nil {
		return 0
	}
	return a.cmd.Process.Pid
}

// Stop stops the agent (SIGTERM, then SIGKILL after 10s) and reaps it. It
// is a no-op when the agent is not running. Its ports stay claimed (see
// portBlock): it restarts on them. So does its data directory, but for a
// dev agent's, which Start wipes.
func (a *Agent) Stop() error { return a.stop(syscall.SIGTERM) }

// Kill kills the agent (SIGKILL) and reaps it, as a crash would end it. Its
// ports stay claimed, as after Stop.
func (a *Agent) Kill() error { return a.stop(syscall.SIGKILL) }

// Close stops the agent and gives its ports back; it is not to be started
// again.
func (a *Agent) Close() error {
	return errors.Join(a.Stop(), a.ports.Close())
}

func (a *Agent) stop(sig syscall.Signal) error {
	if a.cmd == nil {
		return nil
	}
	defer func() { a.cmd = nil }()
	select {
	case <-a.exited:
		return nil
	default:
	}
	if err := a.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal consul: %w", err)
	}
	select {
	case <-a.exited:
		return nil
	case <-time.After(10 * time.Second):
	}
	if err := a.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill consul: %w", err)
	}
	<-a.exited
	return nil
}

// LogTail returns the end of the agent's log, DEBUG lines left out, for
// error messages.
func (a *Agent) LogTail() string {
	b, err := os.ReadFile(a.LogPath)
	if err != nil {
		return fmt.Sprintf("(no consul log: %v)", err)
	}
	// A dev agent logs every HTTP request at DEBUG, and a test polling
	// it would fill the tail with them.
	var kept []string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.Contains(l, "[DEBUG]") {
			kept = append(kept, l)
		}
	}
	tail := strings.Join(kept, "\n")
	if len(tail) > 4000 {
		tail = tail[len(tail)-4000:]
	}
	return tail
}

// Leader returns what /v1/status/leader answers: the leader's server RPC
// address, "" when there is none.
func (a *Agent) Leader(ctx context.Context) (string, error) {
	c, err := a.API()
	if err != nil {
		return "", err
	}
	var leader string
	_, err = c.Raw().Query("/v1/status/leader", &leader, (&api.QueryOptions{}).WithContext(ctx))
	return leader, err
}

func (a *Agent) waitLeader(timeout time.Duration) error {
	return a.poll(timeout, "no leader yet", func(ctx context.Context) (bool, error) {
		leader, err := a.Leader(ctx)
		return leader != "", err
	})
}

func (a *Agent) waitUp(timeout time.Duration) error {
	// /v1/status/leader needs no ACL token: it answers (perhaps "", no
	// leader yet) before the ACL system has been bootstrapped.
	return a.poll(timeout, "not answering yet", func(ctx context.Context) (bool, error) {
		_, err := a.Leader(ctx)
		return err == nil, err
	})
}

// poll calls ok every 50ms, each call bounded by a second (whatever holds
// the port may not be the agent, and may never answer), until it holds,
// the agent exits, or timeout passes.
func (a *Agent) poll(timeout time.Duration, notYet string, ok func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var lastErr error
	for {
		qctx, qcancel := context.WithTimeout(ctx, time.Second)
		done, err := ok(qctx)
		qcancel()
		if done {
			return nil
		}
		if err == nil {
			err = errors.New(notYet)
		}
		lastErr = err
		select {
		case <-a.exited:
			return fmt.Errorf("agent exited: %w", lastErr)
		case <-ctx.Done():
			return fmt.Errorf("not up within %v: %w", timeout, lastErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

package localconsul

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/trimkit/trimkit/internal/ctxtime"
)

// Cluster is Consul as it runs in production, on loopback: servers doing
// Raft (bootstrap_expect, retry_join) and client agents, each member with
// its own data directory and free ports, gossip encrypted with a key from
// `consul keygen`.
type Cluster struct {
	Servers []*Agent
	Clients []*Agent
	// Security is the TLS and ACL setup when the cluster is secure, else
	// nil.
	Security *Security
	// Datacenter is the cluster's datacenter: dc1 unless it is a
	// Federation's secondary.
	Datacenter string

	dir string // where cluster.json is (see OpenCluster)
	key string // the gossip key, the Federation's too
	// primary is the primary datacenter of the cluster's Federation, ""
	// outside one.
	primary string
}

// ClusterOptions says what a Cluster is made of.
type ClusterOptions struct {
	Servers int // default 3
	Clients int // default 2
	// Detach starts the members in their own sessions (make cluster).
	Detach bool
	// Secure turns on TLS and default-deny ACLs (see Security); the
	// cluster makes its CA and tokens under its directory.
	Secure bool
}

// NewCluster prepares a cluster that runs bin, each member's data and log in
// a directory of its own under dir. Start it with Start.
func NewCluster(bin, dir string, o ClusterOptions) (*Cluster, error) {
	return newCluster(bin, dir, o, federated{})
}

// federated is how a cluster takes part in a Federation: its datacenter,
// the primary's, and what it shares with the primary's cluster (nil for
// the primary itself).
type federated struct {
	datacenter, primary string
	with                *Cluster
}

func newCluster(bin, dir string, o ClusterOptions, fed federated) (*Cluster, error) {
	// Absolute: the members' configurations name their data directories,
	// and OpenCluster may run elsewhere.
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	o.Servers = cmp(o.Servers, 3)
	o.Clients = cmp(o.Clients, 2)
	c := &Cluster{dir: dir, Datacenter: defaultDatacenter, primary: fed.primary}
	if fed.datacenter != "" {
		c.Datacenter = fed.datacenter
	}
	if fed.with != nil {
		// One gossip key for the LAN and the WAN; one CA and one set of
		// tokens, the primary's.
		c.key, c.Security = fed.with.key, fed.with.Security
	} else {
		out, err := exec.Command(bin, "keygen").Output()
		if err != nil {
			return nil, fmt.Errorf("consul keygen: %w", err)
		}
		c.key = strings.TrimSpace(string(out)) // gossip encryption
		if o.Secure {
			if c.Security, err = NewSecurity(bin, dir); err != nil {
				return nil, err
			}
		}
	}
	// A secondary datacenter's members are named after it: its agents
	// and the primary's are listed together (consul members -wan, a
	// setup's state).
	prefix := ""
	if c.secondary() {
		prefix = c.Datacenter + "-"
	}
	for i := range o.Servers + o.Clients {
		server := i < o.Servers
		name := fmt.Sprintf("%sserver-%d", prefix, i+1)
		if !server {
			name = fmt.Sprintf("%sclient-%d", prefix, i-o.Servers+1)
		}
		a, err := New(bin, filepath.Join(dir, name), Options{Detach: o.Detach, Security: c.Security,
			Datacenter: fed.datacenter, PrimaryDatacenter: fed.primary, Member: &Member{
				Name: name, Server: server, BootstrapExpect: o.Servers, Encrypt: c.key,
			}})
		if err != nil {
			return nil, err
		}
		if server {
			c.Servers = append(c.Servers, a)
		} else {
			c.Clients = append(c.Clients, a)
		}
	}
	if err := c.joinServers(); err != nil {
		return nil, err
	}
	return c, nil
}

// secondary reports whether the cluster is a Federation's datacenter
// other than the primary.
func (c *Cluster) secondary() bool { return c.primary != "" && c.primary != c.Datacenter }

func cmp(n, def int) int {
	if n <= 0 {
		return def
	}
	return n
}

// joinServers points every member's retry_join at the servers, and
// records the members for OpenCluster.
func (c *Cluster) joinServers() error {
	for _, a := range c.Members() {
		var join []string
		for _, s := range c.Servers {
			if s != a {
				join = append(join, s.SerfLANAddr)
			}
		}
		if err := a.setRetryJoin(join); err != nil {
			return err
		}
	}
	return c.save()
}

// Members are the servers, then the clients.
func (c *Cluster) Members() []*Agent { return append(slices.Clone(c.Servers), c.Clients...) }

// Start starts the cluster and waits, at most timeout, until every member
// is alive to the others. The servers start first; once they have elected
// a leader, a secure cluster creates the agents' token (chosen in advance
// and named in every agent's configuration) and waits until every server
// knows it, and only then do the client agents start. A client agent that
// started earlier would try its token before it existed, fail its first
// sync with the servers ("ACL not found") and then hold back every change,
// its services' checks included, for 15 to 30 seconds.
func (c *Cluster) Start(timeout time.Duration) (err error) {
	deadline := time.Now().Add(timeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	defer func() {
		if err != nil {
			_ = c.Stop()
		}
	}()
	if err := c.start(c.Servers, deadline); err != nil {
		return err
	}
	if _, err := c.WaitLeader(ctx, nil); err != nil {
		return err
	}
	if sec := c.Security; sec != nil {
		if err := c.agentToken(ctx); err != nil {
			return err
		}
	}
	if err := c.start(c.Clients, deadline); err != nil {
		return err
	}
	if sec := c.Security; sec != nil {
		for _, a := range c.Clients {
			if err := sec.useAgentToken(a); err != nil {
				return err
			}
		}
	}
	return c.WaitAlive(ctx)
}

// start starts members one after the other.
func (c *Cluster) start(members []*Agent, deadline time.Time) error {
	for _, a := range members {
		serf := a.SerfLANAddr
		if err := a.Start(time.Until(deadline)); err != nil {
			return err
		}
		if a.SerfLANAddr != serf {
			// It had to take new ports: the members still to start (and
			// any restart) must join it there.
			if err := c.joinServers(); err != nil {
				return err
			}
		}
	}
	return nil
}

// agentToken creates the agents' token, waits until every server knows
// it, and sets it again on each server, whose first sync, made before the
// token existed, failed. A secondary datacenter's servers do not create
// it: the primary's did, and they know it once they have replicated it.
func (c *Cluster) agentToken(ctx context.Context) error {
	if !c.secondary() {
		api, err := c.Servers[0].API()
		if err != nil {
			return err
		}
		if err := c.Security.CreateAgentToken(ctx, api); err != nil {
			return err
		}
	}
	if err := WaitTokens(ctx, c.Servers, c.Security.AgentToken); err != nil {
		return err
	}
	for _, s := range c.Servers {
		if err := c.Security.useAgentToken(s); err != nil {
			return err
		}
	}
	return nil
}

// Stop stops every running member, clients first, and reaps them.
func (c *Cluster) Stop() error {
	var errs []error
	members := c.Members()
	slices.Reverse(members)
	for _, a := range members {
		errs = append(errs, a.Stop())
	}
	return errors.Join(errs...)
}

// Close stops every member and gives their ports back; the cluster is not
// to be started again.
func (c *Cluster) Close() error {
	errs := []error{c.Stop()}
	for _, a := range c.Members() {
		errs = append(errs, a.Close())
	}
	return errors.Join(errs...)
}

// Leader returns the server that is leader now, as the running members see
// it, or nil when there is none.
func (c *Cluster) Leader(ctx context.Context) (*Agent, error) {
	var lastErr error
	for _, a := range c.Members() {
		if !a.Running() {
			continue
		}
		addr, err := a.Leader(ctx)
		if err != nil {
			lastErr = err
			continue
		}
		for _, s := range c.Servers {
			if addr != "" && s.ServerAddr == addr {
				return s, nil
			}
		}
		return nil, nil
	}
	return nil, fmt.Errorf("no running member answered: %v", lastErr)
}

// KillLeader kills the leader (SIGKILL, as a crash would), waits until
// another server is elected, and returns both and how long the election
// took from the kill.
func (c *Cluster) KillLeader(ctx context.Context) (killed, next *Agent, took time.Duration, err error) {
	killed, err = c.Leader(ctx)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("find the leader: %w", err)
	}
	if killed == nil {
		return nil, nil, 0, errors.New("no leader to kill")
	}
	killedAt := time.Now()
	if err := killed.Kill(); err != nil {
		return killed, nil, 0, err
	}
	if next, err = c.WaitLeader(ctx, killed); err != nil {
		return killed, nil, 0, err
	}
	return killed, next, time.Since(killedAt), nil
}

// WaitLeader waits until there is a leader other than not (nil: any), and
// returns it.
func (c *Cluster) WaitLeader(ctx context.Context, not *Agent) (*Agent, error) {
	for {
		leader, err := c.Leader(ctx)
		if err == nil && leader != nil && leader != not {
			return leader, nil
		}
		if !ctxtime.Sleep(ctx, 50*time.Millisecond) {
			return nil, fmt.Errorf("no new leader: %w (last: %v)", ctx.Err(), err)
		}
	}
}

// WaitAlive waits until every running member sees every running member
// alive.
func (c *Cluster) WaitAlive(ctx context.Context) error {
	var running []string
	for _, a := range c.Members() {
		if a.Running() {
			running = append(running, a.Name)
		}
	}
	for {
		err := c.alive(running)
		if err == nil {
			return nil
		}
		if !ctxtime.Sleep(ctx, 100*time.Millisecond) {
			return fmt.Errorf("members not all alive: %w (last: %v)", ctx.Err(), err)
		}
	}
}

// serfAlive is serf's MemberStatus for an alive member (api.AgentMember
// carries serf's number).
const serfAlive = 1

func (c *Cluster) alive(names []string) error {
	for _, a := range c.Members() {
		if !a.Running() {
			continue
		}
		client, err := a.API()
		if err != nil {
			return err
		}
		members, err := client.Agent().Members(false)
		if err != nil {
			return fmt.Errorf("%s: %w", a.Name, err)
		}
		status := map[string]int{}
		for _, m := range members {
			status[m.Name] = m.Status
		}
		for _, n := range names {
			if status[n] != serfAlive {
				return fmt.Errorf("%s sees %s as %d", a.Name, n, status[n])
			}
		}
	}
	return nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/internal/localconsul"
	"github.com/trimkit/trimkit/internal/proc"
)

// fleet is a setup that up, cluster or chaos started, as its state file
// records it: what the member commands (status, kill, stop, restart), down
// and chaos act on, each process by its recorded PID.
type fleet struct {
	dir string // the state directory
	// mu guards writes to st and its saving: the chaos soak starts two
	// members at once when it overlaps faults. Each writes its own member
	// only.
	mu   sync.Mutex
	st   state
	bins binPaths
	// cluster is nil for up's dev agent; with several datacenters, it is
	// the primary's, and federated are the others', in the order of
	// st.Datacenters.
	cluster   *localconsul.Cluster
	federated []*localconsul.Cluster
}

// openFleet reads the state in dir and, for a cluster, opens it.
func openFleet(cfg config) (*fleet, error) {
	st, err := readState(cfg.state)
	if err != nil {
		return nil, err
	}
	f := &fleet{dir: cfg.state, st: st, bins: binPaths{consul: exeOf(st.Consul), trimsvc: exeOf(st.Instances)}}
	if st.Cluster != "" {
		if f.cluster, err = localconsul.OpenCluster(f.bins.consul, st.Cluster); err != nil {
			return nil, err
		}
	}
	for _, dir := range st.Federated {
		c, err := localconsul.OpenCluster(f.bins.consul, dir)
		if err != nil {
			return nil, err
		}
		f.federated = append(f.federated, c)
	}
	return f, nil
}

// clusters are the setup's clusters, the primary datacenter's first; none
// for up's dev agent.
func (f *fleet) clusters() []*localconsul.Cluster {
	if f.cluster == nil {
		return nil
	}
	return append([]*localconsul.Cluster{f.cluster}, f.federated...)
}

// datacenters are the setup's datacenters as its members record them: ""
// alone with one, else their names, the primary first; clusters()[i] is
// datacenters()[i]'s, for a cluster.
func (f *fleet) datacenters() []string {
	if len(f.st.Datacenters) == 0 {
		return []string{""}
	}
	return f.st.Datacenters
}

// clusterIn is datacenter dc's cluster, as datacenters names it; nil for
// up's dev agent.
func (f *fleet) clusterIn(dc string) *localconsul.Cluster {
	i := slices.Index(f.datacenters(), dc)
	if cs := f.clusters(); i >= 0 && i < len(cs) {
		return cs[i]
	}
	return nil
}

// agent is the cluster member named name, of any datacenter; nil for none.
func (f *fleet) agent(name string) *localconsul.Agent {
	for _, c := range f.clusters() {
		if a := c.Member(name); a != nil {
			return a
		}
	}
	return nil
}

// inDatacenter are the processes of procs in datacenter dc.
func inDatacenter(procs []stateProc, dc string) []*stateProc {
	var in []*stateProc
	for i := range procs {
		if procs[i].Datacenter == dc {
			in = append(in, &procs[i])
		}
	}
	return in
}

// closeClusters gives back the port blocks that this process holds for
// the clusters' members.
func (f *fleet) closeClusters() {
	for _, c := range f.clusters() {
		_ = c.Close()
	}
}

// exeOf is the executable the processes ran, as recorded.
func exeOf(ps []stateProc) string {
	if len(ps) == 0 {
		return ""
	}
	return ps[0].Exe
}

// reload reads the state file again, after commands of other processes
// (bin/trimdev restart) recorded the members they started in it.
func (f *fleet) reload() error {
	st, err := readState(f.dir)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.st = st
	f.mu.Unlock()
	return nil
}

func (f *fleet) save() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return writeState(f.dir, f.st)
}

// processes are every process of the fleet: the Consul agents, the
// instances, and Jaeger with -tracing.
func (f *fleet) processes() []*stateProc {
	var ps []*stateProc
	for i := range f.st.Consul {
		ps = append(ps, &f.st.Consul[i])
	}
	for i := range f.st.Instances {
		ps = append(ps, &f.st.Instances[i])
	}
	if f.st.Jaeger != nil {
		ps = append(ps, f.st.Jaeger)
	}
	return ps
}

// names are the members' names: the Consul agents, then the instances.
func (f *fleet) names() []string {
	var names []string
	for _, p := range append(slices.Clone(f.st.Consul), f.st.Instances...) {
		names = append(names, p.Name)
	}
	return names
}

// find returns the process named name (a Consul member's name, an
// instance's name or service ID) and, for a cluster member, its agent.
func (f *fleet) find(name string) (*stateProc, *localconsul.Agent, error) {
	for i := range f.st.Consul {
		if p := &f.st.Consul[i]; p.Name == name {
			return p, f.agent(name), nil
		}
	}
	for i := range f.st.Instances {
		if p := &f.st.Instances[i]; p.Name == name || p.ID == name {
			return p, nil, nil
		}
	}
	return nil, nil, fmt.Errorf("no member named %q: the members are %s", name, strings.Join(f.names(), ", "))
}

// alive reports whether p's process runs (and is still p, not a reused
// PID).
func alive(p *stateProc) bool {
	exe, running := procExe(p)
	return running && exe == p.Exe
}

// gone reports whether p's process has ended (or its PID is another
// program's now). A process on its way out has no executable to read any
// more, but it is not gone until it is a zombie: alive is false for it
// already.
func gone(p *stateProc) bool {
	exe, running := procExe(p)
	return !running || exe != "" && exe != p.Exe
}

// procExe reports whether p's PID runs, and its executable ("" when it
// cannot be read: a process on its way out).
func procExe(p *stateProc) (exe string, running bool) {
	if p.PID <= 0 || !proc.Alive(p.PID) {
		return "", false
	}
	exe, _ = os.Readlink(fmt.Sprintf("/proc/%d/exe", p.PID))
	return exe, true
}

// sendSignal sends sig to p, when it runs.
func sendSignal(p *stateProc, sig syscall.Signal) error {
	if !alive(p) {
		return fmt.Errorf("%s is not running", p.Name)
	}
	if err := syscall.Kill(p.PID, sig); err != nil {
		return fmt.Errorf("signal %s (pid %d): %w", p.Name, p.PID, err)
	}
	return nil
}

// kill kills p (SIGKILL) and waits until it is gone.
func kill(p *stateProc) error {
	if err := sendSignal(p, syscall.SIGKILL); err != nil {
		return err
	}
	return waitGone(p, 5*time.Second)
}

// stop stops p: SIGTERM, grace to exit, then SIGKILL. It says what it did.
func stop(p *stateProc, grace time.Duration) (string, error) {
	if !alive(p) {
		return "already gone", nil
	}
	return proc.StopPID(p.PID, p.Exe, grace)
}

func waitGone(p *stateProc, timeout time.Duration) error {
	for deadline := time.Now().Add(timeout); !gone(p); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s (pid %d) still running %v after SIGKILL", p.Name, p.PID, timeout)
		}
	}
	return nil
}

// start starts the member named name again, which must not be running: a
// Consul member on its address, ports and data directory, waiting until
// it has rejoined (a server: until it is a voter again, with a leader; a
// client agent: until it sees a server and every running instance passes
// again); an instance on its address, waiting until it passes its check.
// It records the new PID.
func (f *fleet) start(ctx context.Context, name string) (note string, err error) {
	p, a, err := f.find(name)
	if err != nil {
		return "", err
	}
	if alive(p) {
		return "", fmt.Errorf("%s is running (pid %d): stop it first, or restart it", name, p.PID)
	}
	defer func() {
		if werr := f.save(); werr != nil {
			err = errors.Join(err, werr)
		}
	}()
	if slices.ContainsFunc(f.st.Instances, func(in stateProc) bool { return in.Name == p.Name }) {
		q := *p
		note, err := startInstance(ctx, f.bins.trimsvc, f.dir, &q)
		f.mu.Lock()
		*p = q
		f.mu.Unlock()
		if err != nil {
			return note, err
		}
		return note, f.waitPassing(ctx, 20*time.Second, p.ID)
	}
	if a == nil {
		return "", fmt.Errorf("%s: only a cluster's members start again (a dev agent forgets everything: make down, make up)", name)
	}
	// An agent this process started and someone killed is reaped a moment
	// after it died.
	for deadline := time.Now().Add(2 * time.Second); a.Running() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if !a.IsServer() {
		if err := f.waitLeaveDone(ctx, p.Datacenter, name, 20*time.Second); err != nil {
			return "", err
		}
	}
	if err := a.Start(30 * time.Second); err != nil {
		return "", err
	}
	f.mu.Lock()
	p.PID = a.PID()
	f.mu.Unlock()
	if a.IsServer() {
		// A server alone, or with too few of its peers, cannot elect a
		// leader: it is back once a quorum of them is.
		if running, all := f.serversRunning(p.Datacenter); 2*running <= all {
			return fmt.Sprintf("up; too few of its datacenter's servers run for a quorum (%d of %d): not waiting for a leader", running, all), nil
		}
	}
	if err := f.waitRejoined(ctx, a, 60*time.Second); err != nil || a.IsServer() {
		return "", err
	}
	// A client agent that left the cluster (SIGTERM) took its services'
	// registrations out of the catalog, and one that comes back registers
	// them again with their checks critical until they first run: back
	// once they pass on the agent itself, then in the callers' view. (The
	// catalog alone could still show what the agent synced before it
	// stopped.)
	var ids []string
	for _, in := range f.st.Instances {
		if alive(&in) {
			ids = append(ids, in.ID)
		}
	}
	if err := waitLocalPassing(ctx, a, 30*time.Second, ids...); err != nil {
		return "", err
	}
	return "", f.waitPassing(ctx, 30*time.Second, ids...)
}

// serversRunning counts the servers of datacenter dc, and those of them
// that run.
func (f *fleet) serversRunning(dc string) (running, all int) {
	c := f.clusterIn(dc)
	if c == nil {
		return 0, 0
	}
	for _, s := range c.Servers {
		p, _, err := f.find(s.Name)
		if err != nil {
			continue
		}
		all++
		f.mu.Lock()
		q := *p
		f.mu.Unlock()
		if alive(&q) {
			running++
		}
	}
	return running, all
}

// restart stops the member named name when it runs (SIGTERM, as an
// operator's restart does: a client agent leaves the cluster) and starts
// it again.
func (f *fleet) restart(ctx context.Context, name string) (string, error) {
	p, _, err := f.find(name)
	if err != nil {
		return "", err
	}
	if _, err := stop(p, 10*time.Second); err != nil {
		return "", err
	}
	return f.start(ctx, name)
}

// consulAPI returns an API client for a running Consul agent: the callers'
// agent when it runs, else any running member, of the primary datacenter
// first. With several datacenters, what it is asked about a datacenter
// names the datacenter (api.QueryOptions.Datacenter): any agent answers
// for any datacenter.
func (f *fleet) consulAPI() (*api.Client, error) { return f.apiIn(nil) }

// agentAPI returns an API client for a running Consul agent of datacenter
// dc, the callers' agent first: for what an agent knows of its own
// datacenter alone (its LAN members).
func (f *fleet) agentAPI(dc string) (*api.Client, error) {
	return f.apiIn(func(p stateProc) bool { return p.Datacenter == dc })
}

// apiIn returns an API client for a running Consul agent that in accepts
// (nil: any), the callers' agent first.
func (f *fleet) apiIn(in func(stateProc) bool) (*api.Client, error) {
	procs := slices.Clone(f.st.Consul)
	slices.SortStableFunc(procs, func(a, b stateProc) int { // the callers' agent first
		return boolToInt(f.isCallers(b)) - boolToInt(f.isCallers(a))
	})
	for i := range procs {
		if !alive(&procs[i]) || in != nil && !in(procs[i]) {
			continue
		}
		return f.apiOf(&procs[i])
	}
	return nil, errors.New("no consul agent is running")
}

func boolToInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (f *fleet) isCallers(p stateProc) bool { return strings.HasSuffix(f.st.HTTPAddr, "//"+p.Addr) }

// apiOf returns an API client for p, a Consul agent (with the management
// token in a secure cluster).
func (f *fleet) apiOf(p *stateProc) (*api.Client, error) {
	if a := f.agent(p.Name); a != nil {
		return a.API()
	}
	cfg := api.DefaultConfig()
	cfg.Address = p.Addr
	return api.NewClient(cfg)
}

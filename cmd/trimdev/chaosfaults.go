package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/internal/ctxtime"
	"github.com/trimkit/trimkit/internal/localconsul"
)

// inject injects fl and undoes what it did (a killed member is started
// again, a frozen instance thawed); recover then waits for the cluster to
// be whole. It returns the member hit and what happened.
func (s *soak) inject(ctx context.Context, fl fault) (target, what string, err error) {
	if len(fl.parts) > 0 {
		return s.injectCompound(ctx, fl)
	}
	if fl.step > 0 {
		return s.walkStep(ctx, fl.step)
	}
	f := s.f
	// The faults of one member hit the primary datacenter's, where the
	// load's calls go.
	primary := f.datacenters()[0]
	instances := inDatacenter(f.st.Instances, primary)
	instance := instances[fl.target%len(instances)]
	switch fl.kind {
	case instanceKill, instanceTerm:
		sig, wait := syscall.SIGKILL, 5*time.Second
		if fl.kind == instanceTerm {
			sig, wait = syscall.SIGTERM, 20*time.Second // it deregisters and drains
		}
		if err := sendSignal(instance, sig); err != nil {
			return instance.Name, "", err
		}
		if err := waitGone(instance, wait); err != nil {
			return instance.Name, "", err
		}
		note, err := f.start(ctx, instance.Name)
		return instance.Name, joinNote(fmt.Sprintf("%s, started again on %s", signalName(sig), instance.Addr), note), err
	case instanceStop:
		if err := sendSignal(instance, syscall.SIGSTOP); err != nil {
			return instance.Name, "", err
		}
		ctxtime.Sleep(ctx, fl.hold)
		if err := sendSignal(instance, syscall.SIGCONT); err != nil {
			return instance.Name, "", err
		}
		return instance.Name, fmt.Sprintf("SIGSTOP, SIGCONT %v later", fl.hold.Round(time.Millisecond)), nil
	case serverKill, leaderKill:
		return s.killServer(ctx, fl)
	case client1Restart, client2Restart:
		name := "client-1"
		if fl.kind == client2Restart {
			name = "client-2"
		}
		_, err := f.restart(ctx, name)
		return name, "SIGTERM (it leaves the cluster), started again", err
	case instanceToken:
		note, err := s.rotate(ctx, tokenFileOf(instance), f.clusterIn(primary).Servers, instanceTokenWatch)
		return instance.Name, joinNote("new token written to its token file, old one deleted", note), err
	case callerToken:
		// Every datacenter's servers must know the callers' new token:
		// the callers' watch of a datacenter reaches its servers.
		var servers []*localconsul.Agent
		for _, c := range f.clusters() {
			servers = append(servers, c.Servers...)
		}
		note, err := s.rotate(ctx, f.st.Caller.TokenFile, servers, callerTokenWatch)
		return "callers", joinNote("new token written to the callers' token file, old one deleted", note), err
	case dc1InstancesKill, dc2InstancesKill:
		dc := strings.TrimSuffix(string(fl.kind), "-instances-sigkill")
		return s.killInstances(ctx, dc, fl.hold)
	case dc2ServersKill:
		return s.killServers(ctx, "dc2", fl.hold)
	case wanCut:
		return s.cutWAN(ctx, "dc2", wanCutFactor*fl.hold)
	}
	return "", "", fmt.Errorf("unknown fault kind %q", fl.kind)
}

// injectCompound injects the parts of a compound fault: two overlapping,
// the second fl.lag after the first began, or one after the other, each as
// soon as the one before was undone, with no wait for recovery.
func (s *soak) injectCompound(ctx context.Context, fl fault) (target, what string, err error) {
	targets := make([]string, len(fl.parts))
	whats := make([]string, len(fl.parts))
	errs := make([]error, len(fl.parts))
	if fl.kind == backToBack {
		for i, p := range fl.parts {
			targets[i], whats[i], errs[i] = s.inject(ctx, p)
			whats[i] = fmt.Sprintf("%s %s: %s", p.kind, targets[i], whats[i])
			if errs[i] != nil {
				break
			}
		}
	} else {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			targets[0], whats[0], errs[0] = s.inject(ctx, fl.parts[0])
		}()
		ctxtime.Sleep(ctx, fl.lag)
		targets[1], whats[1], errs[1] = s.inject(ctx, fl.parts[1])
		wg.Wait()
		whats[0] = fmt.Sprintf("%s %s: %s", fl.parts[0].kind, targets[0], whats[0])
		whats[1] = fmt.Sprintf("%v later, %s %s: %s", fl.lag.Round(time.Millisecond), fl.parts[1].kind, targets[1], whats[1])
	}
	return strings.Join(targets, "+"), strings.Join(whats, "; "), errors.Join(errs...)
}

// walkStep runs step n of the walkthrough, its commands as printed, each
// checked as the walkthrough checks it. The commands record what they
// restart in the state file; the soak reads it again after (reload).
func (s *soak) walkStep(ctx context.Context, n int) (target, what string, err error) {
	f := s.f
	if s.walk.vars == nil || n <= 2 {
		// The leader a round names, as make cluster printed it: step 3
		// kills it and step 4 starts the same server again.
		leader, err := f.leader(ctx)
		if err != nil || leader == "" {
			return "", "", fmt.Errorf("no leader at the start of a round of the walkthrough: %q, %v", leader, err)
		}
		s.walk.vars = walkVars(f.dir, leader)
	}
	ran, err := s.walk.step(ctx, walkSteps()[n-1])
	return "", strings.Join(ran, "; "), errors.Join(err, f.reload())
}

// killServer kills the leader, or a server that does not lead, and starts
// it again fl.hold after (after a new leader, for the leader).
func (s *soak) killServer(ctx context.Context, fl fault) (target, what string, err error) {
	f := s.f
	leader, err := f.leader(ctx)
	if err != nil || leader == "" {
		return "", "", fmt.Errorf("no leader before the fault: %q, %v", leader, err)
	}
	target = leader
	if fl.kind == serverKill {
		var others []string
		for _, srv := range f.cluster.Servers {
			if srv.Name != leader {
				others = append(others, srv.Name)
			}
		}
		target = others[fl.target%len(others)]
	}
	p, _, err := f.find(target)
	if err != nil {
		return target, "", err
	}
	killed := time.Now()
	if err := kill(p); err != nil {
		return target, "", err
	}
	what = "SIGKILL"
	if fl.kind == leaderKill {
		next, err := f.waitLeader(ctx, f.datacenters()[0], target, 30*time.Second)
		if err != nil {
			return target, what, err
		}
		what += fmt.Sprintf(", %s led after %v", next, time.Since(killed).Round(time.Millisecond))
	}
	ctxtime.Sleep(ctx, fl.hold)
	if _, err := f.start(ctx, target); err != nil {
		return target, what, err
	}
	return target, what + fmt.Sprintf(", started again %v after, a voter again %v after", fl.hold.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond)), nil
}

// rotate rotates the token in file as operators do: a new token with the
// same policies, known to every one of servers, written to the file (a
// rename, so that no reader sees half a file), then the old token
// deleted; then it watches for watch. A process that reads the file only
// once is left with a deleted token. When the servers of another
// datacenter are slow to replicate the new token, the note says how slow,
// and how their ACL replication stood then.
func (s *soak) rotate(ctx context.Context, file string, servers []*localconsul.Agent, watch time.Duration) (note string, err error) {
	c, err := s.f.consulAPI()
	if err != nil {
		return "", err
	}
	federated := len(s.f.federated) > 0
	wait := tokenWait
	if federated {
		wait = replicationWait
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	began := time.Now()
	status := make(chan string, 1)
	slow := time.AfterFunc(slowReplication, func() { status <- s.f.replicationStatus(wctx) })
	_, err = localconsul.RotateTokenFile(wctx, c, servers, file)
	if !slow.Stop() && federated {
		note = fmt.Sprintf("every server knew the new token %v after it was made; %v after, %s",
			time.Since(began).Round(100*time.Millisecond), slowReplication, <-status)
	}
	if err != nil {
		return note, err
	}
	ctxtime.Sleep(ctx, watch)
	return note, nil
}

// How long a token rotation waits for every server to know the new token:
// a moment in one datacenter (tokenWait). The servers of another know it
// once they have replicated it, within a second or two as a rule; but once
// in a 10-minute soak (a WAN cut, then dc1's servers killed one after the
// other) dc2's servers went over 30s without it, no error logged: their
// replication's blocking query to dc1 had not returned, it seems. Such a
// query ends by Consul's default query time, 5 minutes, plus its jitter
// and the RPC client timeout (60s): replicationWait.
const (
	tokenWait       = 10 * time.Second
	replicationWait = 7 * time.Minute
	slowReplication = 10 * time.Second
)

// replicationStatus says how the ACL replication of every datacenter but
// the primary stands, as its leader reports it.
func (f *fleet) replicationStatus(ctx context.Context) string {
	var out []string
	for _, dc := range f.datacenters()[1:] {
		st, err := f.aclReplication(ctx, dc)
		if err != nil {
			out = append(out, fmt.Sprintf("%s's ACL replication: %v", dc, err))
			continue
		}
		line := fmt.Sprintf("%s's ACL replication: running %t, token index %d, last success %v ago", dc, st.Running, st.ReplicatedTokenIndex,
			time.Since(st.LastSuccess).Round(100*time.Millisecond))
		if !st.LastError.IsZero() {
			line += fmt.Sprintf(", last error %v ago (%s)", time.Since(st.LastError).Round(100*time.Millisecond), st.LastErrorMessage)
		}
		out = append(out, line)
	}
	return strings.Join(out, "; ")
}

// aclReplication is the ACL replication status of datacenter dc's leader.
func (f *fleet) aclReplication(ctx context.Context, dc string) (*api.ACLReplicationStatus, error) {
	leader, err := f.leaderIn(ctx, dc)
	if err != nil || leader == "" {
		return nil, fmt.Errorf("no leader (%v)", err)
	}
	c, err := f.agent(leader).API()
	if err != nil {
		return nil, err
	}
	st, _, err := c.ACL().Replication((&api.QueryOptions{}).WithContext(ctx))
	return st, err
}

// killInstances kills every instance of datacenter dc (SIGKILL), and
// starts them again on their addresses hold after.
func (s *soak) killInstances(ctx context.Context, dc string, hold time.Duration) (target, what string, err error) {
	instances := inDatacenter(s.f.st.Instances, dc)
	var names []string
	for _, in := range instances {
		names = append(names, in.Name)
		if err := sendSignal(in, syscall.SIGKILL); err != nil {
			return dc, "", err
		}
	}
	for _, in := range instances {
		if err := waitGone(in, 5*time.Second); err != nil {
			return dc, "", err
		}
	}
	ctxtime.Sleep(ctx, hold)
	notes, err := s.startAll(ctx, names)
	return dc, joinNote(fmt.Sprintf("SIGKILL %s; started again on their addresses %v later", strings.Join(names, ", "), hold.Round(time.Millisecond)), notes), err
}

// killServers kills every server of datacenter dc (SIGKILL), and starts
// them again hold after.
func (s *soak) killServers(ctx context.Context, dc string, hold time.Duration) (target, what string, err error) {
	var names []string
	for _, srv := range s.f.clusterIn(dc).Servers {
		names = append(names, srv.Name)
		p, _, err := s.f.find(srv.Name)
		if err != nil {
			return dc, "", err
		}
		if err := kill(p); err != nil {
			return dc, "", err
		}
	}
	ctxtime.Sleep(ctx, hold)
	notes, err := s.startAll(ctx, names)
	return dc, joinNote(fmt.Sprintf("SIGKILL %s; started again %v later", strings.Join(names, ", "), hold.Round(time.Millisecond)), notes), err
}

// cutWAN cuts datacenter dc off the WAN: its servers frozen (SIGSTOP), so
// that the other datacenters' servers reach none of them, gossip and RPC
// alike, until SIGCONT, hold after.
func (s *soak) cutWAN(ctx context.Context, dc string, hold time.Duration) (target, what string, err error) {
	var frozen []*stateProc
	var names []string
	defer func() {
		for _, p := range frozen {
			err = errors.Join(err, sendSignal(p, syscall.SIGCONT))
		}
	}()
	for _, srv := range s.f.clusterIn(dc).Servers {
		p, _, err := s.f.find(srv.Name)
		if err != nil {
			return dc, "", err
		}
		if err := sendSignal(p, syscall.SIGSTOP); err != nil {
			return dc, "", err
		}
		frozen, names = append(frozen, p), append(names, p.Name)
	}
	ctxtime.Sleep(ctx, hold)
	return dc, fmt.Sprintf("SIGSTOP %s (the WAN link cut), SIGCONT %v later", strings.Join(names, ", "), hold.Round(time.Millisecond)), nil
}

// startAll starts the members named again, all at once, and returns what
// each start noted.
func (s *soak) startAll(ctx context.Context, names []string) (string, error) {
	notes, errs := atOnce(len(names), func(i int) (string, error) {
		note, err := s.f.start(ctx, names[i])
		if note != "" {
			note = names[i] + ": " + note
		}
		return note, err
	})
	return strings.Join(slices.DeleteFunc(notes, func(n string) bool { return n == "" }), "; "), errors.Join(errs...)
}

// tokenFileOf is an instance's -consul-token-file.
func tokenFileOf(p *stateProc) string {
	if i := slices.Index(p.Args, "-consul-token-file"); i >= 0 && i+1 < len(p.Args) {
		return p.Args[i+1]
	}
	return ""
}

// slowRecovery is how long the cluster may take to be whole again after a
// fault was undone before the soak says what held it up.
const slowRecovery = 15 * time.Second

// recover waits until the fleet is healthy. A member found dead, one that
// a fault ended by surprise (an instance whose token was deleted under
// it), is started again, and said so.
func (s *soak) recover(ctx context.Context) ([]string, error) {
	f := s.f
	ctx, cancel := context.WithTimeout(ctx, chaosRecover)
	defer cancel()
	var notes []string
	began := time.Now()
	var lastErr error
	for {
		qctx, qcancel := context.WithTimeout(ctx, 2*time.Second)
		err := f.healthy(qctx)
		qcancel()
		if err == nil {
			if took := time.Since(began); took > slowRecovery {
				notes = append(notes, fmt.Sprintf("whole again %v after the fault was undone; what held it up last: %v", took.Round(100*time.Millisecond), lastErr))
			}
			return notes, nil
		}
		lastErr = err
		for _, name := range f.names() {
			p, _, _ := f.find(name)
			if alive(p) {
				continue
			}
			notes = append(notes, fmt.Sprintf("%s (pid %d) had exited (%s): started again", name, p.PID, lastLine(p.Log)))
			if _, err := f.start(ctx, name); err != nil {
				return notes, err
			}
		}
		if !ctxtime.Sleep(ctx, 100*time.Millisecond) {
			return notes, fmt.Errorf("not healthy within %v: %w", chaosRecover, err)
		}
	}
}

func joinNote(what, note string) string {
	if note == "" {
		return what
	}
	return what + " (" + note + ")"
}

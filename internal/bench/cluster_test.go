package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/internal/localconsul"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/sd"
)

// churner registers a service instance and deregisters another every
// interval through c, until stop, cycling over n instances of its own:
// passing at once, or, critical, behind a TTL check that never passes
// (changes a watch wakes for, with nothing to call).
func churner(c *api.Client, prefix string, n int, interval time.Duration, critical bool, stop <-chan struct{}) (changes func() int) {
	var mu sync.Mutex
	count := 0
	go func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			id := fmt.Sprintf("%s-%d", prefix, i%n)
			var err error
			if i/n%2 == 0 {
				err = registerErr(c, id, fmt.Sprintf("127.0.0.1:%d", 20000+i%n), critical)
			} else {
				err = c.Agent().ServiceDeregister(id)
			}
			if err == nil {
				mu.Lock()
				count++
				mu.Unlock()
			}
		}
	}()
	return func() int { mu.Lock(); defer mu.Unlock(); return count }
}

// BenchmarkClusterLeaderLoss SIGKILLs the leader of a 3-server cluster
// while a service churns (a change every 100ms, through client agent 1) and
// a client's Instancer watches it through client agent 2, with the client's
// defaults (stale reads). It reports how long until a new leader, and the
// longest gap between two updates the watch saw around the loss. Run with
// -benchtime 1x.
func BenchmarkClusterLeaderLoss(b *testing.B) {
	c := testenv.Cluster(b)
	svcAPI := testenv.API(b, c.Clients[0])
	stop := make(chan struct{})
	churner(svcAPI, "churn", 10, 100*time.Millisecond, false, stop)
	defer close(stop)

	s, err := new(sd.Instancers).Instancer(sd.ConsulConfig{Address: c.Clients[1].HTTPAddr}, log.NewNopLogger(), "trimsvc", nil, true, sd.Read{Mode: sd.ReadStale})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Stop()
	events := make(chan kitsd.Event, 100)
	s.Register(events)
	var (
		mu      sync.Mutex
		updates []time.Time
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range events {
			if ev.Err == nil {
				mu.Lock()
				updates = append(updates, time.Now())
				mu.Unlock()
			}
		}
	}()
	time.Sleep(2 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	killedAt := time.Now() // give or take the leader lookup, a millisecond
	_, _, elected, err := c.KillLeader(ctx)
	if err != nil {
		b.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	s.Deregister(events)
	close(events)
	<-done
	var gap time.Duration
	for i := 1; i < len(updates); i++ {
		if updates[i].After(killedAt.Add(-time.Second)) {
			gap = max(gap, updates[i].Sub(updates[i-1]))
		}
	}
	b.ReportMetric(ms(elected), "new_leader_ms")
	b.ReportMetric(ms(gap), "longest_update_gap_ms")
}

// BenchmarkClusterWatches puts 50 watches (client Instancers, in this
// process) on a service of 200 instances through client agent 2, while 4
// instances a second join or leave through client agent 1, for 10s; once
// with leader reads, once with stale reads, once through the agent's cache.
// It reports, per change, the CPU of the 3 servers together and of the
// callers' agent (beyond what they spend idle, measured first over as
// long), and of this process per watch, and how many updates each watch saw
// per change. Run with -benchtime 1x.
func BenchmarkClusterWatches(b *testing.B) {
	const (
		watches   = 50
		instances = 200
		run       = 10 * time.Second
	)
	c := testenv.Cluster(b)
	svcAPI, callAPI := testenv.API(b, c.Clients[0]), testenv.API(b, c.Clients[1])
	for i := range instances {
		if err := registerErr(svcAPI, fmt.Sprintf("base-%d", i), fmt.Sprintf("127.0.0.1:%d", 10000+i), false); err != nil {
			b.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := localconsul.WaitPassing(ctx, callAPI, "trimsvc", localconsul.Count(instances)); err != nil {
		b.Fatal(err)
	}
	// What the servers and the agent spend idle (gossip, Raft heartbeats,
	// anti-entropy), to take out of the figures below.
	serversIdle, agentIdle := cpuOf(c.Servers...), cpuOf(c.Clients[1])
	time.Sleep(run)
	serversIdle, agentIdle = cpuOf(c.Servers...)-serversIdle, cpuOf(c.Clients[1])-agentIdle
	b.ReportMetric(ms(serversIdle)/run.Seconds(), "idle/servers_cpu_ms_per_s")
	b.ReportMetric(ms(agentIdle)/run.Seconds(), "idle/agent_cpu_ms_per_s")
	for _, mode := range []struct {
		name string
		read sd.Read
	}{
		{"leader", sd.Read{Mode: sd.ReadLeader}},
		{"stale", sd.Read{Mode: sd.ReadStale}},
		{"cached", sd.Read{Mode: sd.ReadCache}},
	} {
		var (
			ws   []*sd.Instancer
			chs  []chan kitsd.Event
			seen sync.WaitGroup // the counting goroutines
		)
		counts := make([]int, watches)
		for i := range watches {
			// A pool of its own: a watch of its own, through a client of its own.
			w, err := new(sd.Instancers).Instancer(sd.ConsulConfig{Address: c.Clients[1].HTTPAddr}, log.NewNopLogger(), "trimsvc", nil, true, mode.read)
			if err != nil {
				b.Fatal(err)
			}
			ws = append(ws, w)
			ch := make(chan kitsd.Event, 10)
			chs = append(chs, ch)
			w.Register(ch)
			<-ch
			seen.Add(1)
			go func() {
				defer seen.Done()
				for range ch {
					counts[i]++
				}
			}()
		}
		serversBefore, agentBefore, selfBefore := cpuOf(c.Servers...), cpuOf(c.Clients[1]), cpuTime()
		stop := make(chan struct{})
		changes := churner(svcAPI, "churn-"+mode.name, 20, 250*time.Millisecond, false, stop)
		time.Sleep(run)
		close(stop)
		n := float64(max(changes(), 1))
		servers, agent, self := cpuOf(c.Servers...)-serversBefore-serversIdle, cpuOf(c.Clients[1])-agentBefore-agentIdle, cpuTime()-selfBefore
		for i, w := range ws {
			w.Stop()
			w.Deregister(chs[i])
			close(chs[i])
		}
		seen.Wait() // counts are final
		total := 0
		for _, k := range counts {
			total += k
		}
		b.ReportMetric(ms(servers)/n, mode.name+"/servers_cpu_ms_per_change")
		b.ReportMetric(ms(agent)/n, mode.name+"/agent_cpu_ms_per_change")
		b.ReportMetric(ms(self)/n/watches, mode.name+"/watch_cpu_ms_per_change")
		b.ReportMetric(float64(total)/watches/n, mode.name+"/updates_per_change")
		b.ReportMetric(n/run.Seconds(), mode.name+"/changes_per_s")
	}
	b.ReportMetric(watches, "watches")
	b.ReportMetric(instances, "instances")
}

// cpuOf is the user and system CPU time the agents' processes have used.
func cpuOf(agents ...*localconsul.Agent) time.Duration {
	var total time.Duration
	for _, a := range agents {
		total += pidCPU(a.PID())
	}
	return total
}

// pidCPU is the user and system CPU time process pid has used, 0 when it
// cannot be read.
func pidCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// utime and stime are fields 14 and 15 of stat, in clock ticks of
	// 1/100s; fields here start at stat's third.
	u, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(u+st) * 10 * time.Millisecond
}

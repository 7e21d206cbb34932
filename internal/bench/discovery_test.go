package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/internal/pollsd"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
)

// recording is a Service that notes when it served its first and last call.
type recording struct {
	next        trimsvc.Service
	first, last atomic.Int64 // unix nanoseconds
}

func (r *recording) TrimSpace(ctx context.Context, s string) (string, error) {
	now := time.Now().UnixNano()
	r.first.CompareAndSwap(0, now)
	r.last.Store(now)
	return r.next.TrimSpace(ctx, s)
}

// register registers addr as service instance id; with ttl, behind a TTL
// check that starts critical.
func register(tb testing.TB, c *api.Client, id, addr string, ttl bool) {
	tb.Helper()
	if err := registerErr(c, id, addr, ttl); err != nil {
		tb.Fatal(err)
	}
}

func registerErr(c *api.Client, id, addr string, ttl bool) error {
	return registerService(c, "trimsvc", id, addr, ttl)
}

// registerService is registerErr for an instance of service.
func registerService(c *api.Client, service, id, addr string, ttl bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return err
	}
	reg := &api.AgentServiceRegistration{ID: id, Name: service, Address: host, Port: p}
	if ttl {
		reg.Check = &api.AgentServiceCheck{CheckID: "ttl:" + id, TTL: "5m", Status: api.HealthCritical}
	}
	return c.Agent().ServiceRegister(reg)
}

// BenchmarkDiscovery measures, against a real Consul, how long after an
// instance's check turns passing the client's first request reaches it, and
// how long after its deregistration requests still reach it: with blocking
// queries, 10 trials after a quiet spell (each trial's three changes, then a
// pause), and 10 while other instances of the same service join and leave
// 10 times a second, changes the watch's rate limit (bursts of 4, then 4
// queries a second) batches; and 10 trials through Consul's DNS interface
// (-discovery dns), polled every second. Run with -benchtime 1x.
func BenchmarkDiscovery(b *testing.B) {
	const trials = 10
	agent := testenv.Consul(b)
	c := agent.API()
	var base []string
	for i, addr := range startServers(b, 2) {
		id := fmt.Sprintf("base-%d", i)
		register(b, c, id, addr, false)
		base = append(base, id)
	}
	agent.WaitPassing("trimsvc", base...)
	blocking := client.Config{Consul: sd.ConsulConfig{Address: agent.HTTPAddr}}
	dns := client.Config{Discovery: client.DiscoveryDNS, DNSAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(agent.DNSPort))}
	for _, phase := range []struct {
		name  string
		cfg   client.Config
		churn bool
		// leaveWait is how long after a deregistration to look for the
		// last request: past when the client can still call it.
		leaveWait time.Duration
	}{
		{"quiet", blocking, false, 500 * time.Millisecond},
		{"churn", blocking, true, 500 * time.Millisecond},
		{"dns", dns, false, pollsd.Refresh + 500*time.Millisecond},
	} {
		cl, err := trim.NewClient(phase.cfg)
		if err != nil {
			b.Fatal(err)
		}
		load := loadgen.Start(context.Background(), cl.Endpoint(), "x y", loadgen.Options{Callers: 2})
		stop := make(chan struct{})
		if phase.churn {
			// Instances behind a critical TTL check come and go: changes
			// that wake the watch but never put an instance in the
			// passing list.
			churner(c, "bg", 10, 100*time.Millisecond, true, stop)
		}
		var joins, leaves []time.Duration
		for trial := range trials {
			j, l := discoveryTrial(b, c, fmt.Sprintf("%s-%d", phase.name, trial), phase.leaveWait)
			joins, leaves = append(joins, j), append(leaves, l)
			if !phase.churn {
				time.Sleep(time.Second) // the watch's rate limit refills
			}
		}
		close(stop)
		if s, errs := loadgen.Summarize(load.Stop()); s.Failures > 0 {
			b.Errorf("%s: %d calls failed during the trials: %v", phase.name, s.Failures, errs)
		}
		cl.Close()
		b.ReportMetric(ms(loadgen.Percentile(sorted(joins), 50)), phase.name+"/join_p50_ms")
		b.ReportMetric(ms(slices.Max(joins)), phase.name+"/join_max_ms")
		b.ReportMetric(ms(loadgen.Percentile(sorted(leaves), 50)), phase.name+"/leave_p50_ms")
		b.ReportMetric(ms(slices.Max(leaves)), phase.name+"/leave_max_ms")
	}
	b.ReportMetric(trials, "trials")
}

// discoveryTrial registers a new instance behind a critical TTL check, turns
// it passing and returns how long until its first request, then
// deregisters it and returns how long requests still reached it.
func discoveryTrial(b *testing.B, c *api.Client, id string, leaveWait time.Duration) (join, leave time.Duration) {
	svc, err := trimsvc.New(trimsvc.DefaultMaxInputBytes)
	if err != nil {
		b.Fatal(err)
	}
	rec := &recording{next: svc}
	srv := startServer(b, id, 1, rec)
	defer srv.stop()
	register(b, c, id, srv.addrs[0], true)
	time.Sleep(50 * time.Millisecond)

	passAt := time.Now()
	if err := c.Agent().UpdateTTL("ttl:"+id, "", api.HealthPassing); err != nil {
		b.Fatal(err)
	}
	for rec.first.Load() == 0 {
		if time.Since(passAt) > 5*time.Second {
			b.Fatalf("%s: no request within 5s of passing", id)
		}
		time.Sleep(time.Millisecond)
	}
	join = time.Unix(0, rec.first.Load()).Sub(passAt)

	// Leave at a random moment after the join, not in step with a poll.
	time.Sleep(20*time.Millisecond + rand.N(leaveWait/2))
	leaveAt := time.Now()
	if err := c.Agent().ServiceDeregister(id); err != nil {
		b.Fatal(err)
	}
	time.Sleep(leaveWait)
	return join, max(0, time.Unix(0, rec.last.Load()).Sub(leaveAt))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func sorted(ds []time.Duration) []time.Duration { return slices.Sorted(slices.Values(ds)) }

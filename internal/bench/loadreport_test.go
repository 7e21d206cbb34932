package bench

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/consulname"
	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
)

// loadReportInterval is the interval the README recommends for
// -load-report-interval, at which BenchmarkLoadReportWrites measures.
const loadReportInterval = 5 * time.Second

// countingTransport counts the HTTP requests made through it: the
// LoadReporters' to the agent.
type countingTransport struct {
	http.RoundTripper
	requests atomic.Int64
}

func (t *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.requests.Add(1)
	return t.RoundTripper.RoundTrip(r)
}

// raftApplied is the Raft index the agent (a server) has applied: every
// write to Consul's state advances it by one.
func raftApplied(b *testing.B, c *api.Client) uint64 {
	b.Helper()
	self, err := c.Agent().Self()
	if err != nil {
		b.Fatal(err)
	}
	raft, _ := self["Stats"]["raft"].(map[string]interface{})
	s, _ := raft["applied_index"].(string)
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		b.Fatalf("raft applied_index %q: %v", s, err)
	}
	return n
}

// BenchmarkLoadReportWrites runs 100 LoadReporters (trimsvc
// -load-report-interval 5s) against one Consul server for four intervals,
// after a first interval to start, and reports what 1,000 instances would
// cost: Raft writes per second (KV writes and session changes, each
// replicated to every server), HTTP requests per second to the agents, and
// the server's CPU. Run with -benchtime 1x.
func BenchmarkLoadReportWrites(b *testing.B) {
	const reporters = 100
	agent := testenv.Consul(b)
	c := agent.API()
	counted := &countingTransport{RoundTripper: http.DefaultTransport}
	reporting, err := api.NewClient(&api.Config{Address: agent.HTTPAddr, HttpClient: &http.Client{Transport: counted}})
	if err != nil {
		b.Fatal(err)
	}
	lc := sd.NewClient(reporting)
	sample := func() (int64, time.Duration, int64) { return 1, 0, 0 }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, reporters)
	for i := range reporters {
		r, err := sd.NewLoadReporter(lc, "trimsvc", fmt.Sprintf("trimsvc-%d", i), fmt.Sprintf("127.0.0.1:%d", 20000+i), "",
			loadReportInterval, sample, log.NewNopLogger())
		if err != nil {
			b.Fatal(err)
		}
		go func() { done <- r.Run(ctx) }()
		time.Sleep(loadReportInterval / reporters) // spread over an interval, as instances start
	}
	time.Sleep(loadReportInterval) // every reporter has a session and has written once
	// Four intervals: a whole number of reports (one an interval) and of
	// renewals (one every other interval: the first tick past TTL/2).
	window := 4 * loadReportInterval
	index, requests, cpu := raftApplied(b, c), counted.requests.Load(), cpuOf(agent.Agent)
	time.Sleep(window)
	index, requests, cpu = raftApplied(b, c)-index, counted.requests.Load()-requests, cpuOf(agent.Agent)-cpu
	cancel()
	for range reporters {
		if err := <-done; err != nil {
			b.Error(err)
		}
	}
	per1000 := 1000.0 / reporters / window.Seconds()
	b.ReportMetric(float64(index)*per1000, "raft_writes_per_s_per_1000")
	b.ReportMetric(float64(requests)*per1000, "http_requests_per_s_per_1000")
	b.ReportMetric(ms(cpu)*per1000, "server_cpu_ms_per_s_per_1000")
	b.ReportMetric(loadReportInterval.Seconds(), "interval_s")
	b.ReportMetric(consulname.LoadTTL(loadReportInterval).Seconds(), "session_ttl_s")
}

// limited is a trim service with a fixed capacity: concurrency calls at a
// time, each taking serviceTime; the rest queue. Its queue is what another
// caller's load fills.
type limited struct {
	slots       chan struct{}
	serviceTime time.Duration
	next        trimsvc.Service
}

func newLimited(concurrency int, serviceTime time.Duration, next trimsvc.Service) *limited {
	return &limited{slots: make(chan struct{}, concurrency), serviceTime: serviceTime, next: next}
}

func (l *limited) TrimSpace(ctx context.Context, s string) (string, error) {
	select {
	case l.slots <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-l.slots }()
	time.Sleep(l.serviceTime)
	return l.next.TrimSpace(ctx, s)
}

// The least-loaded comparison: three instances that serve 4 calls at a
// time, 2ms each (a sleep: on a VM it takes longer, so their capacity is
// measured), reporting load every second; another caller sends 60% of an
// instance's capacity straight to the first, and the client under test 60%
// of one instance's capacity to all three.
const (
	llConcurrency = 4
	llServiceTime = 2 * time.Millisecond
	llInterval    = time.Second
	llClientShare = 0.6
	llHammerShare = 0.6
	llWarm        = 2 * time.Second
	llRun         = 4 * time.Second
)

// llCapacity is the calls a second one instance serves: llConcurrency
// slots of llServiceTime.
func llCapacity() float64 { return llConcurrency * sleepRate(llServiceTime, 200) }

// sleepRate is how many sleeps of d a second one goroutine makes here,
// measured over n of them: a sleep takes a little longer than asked, more
// so on a VM, and a service time made of sleeps serves at this rate.
func sleepRate(d time.Duration, n int) float64 {
	start := time.Now()
	for range n {
		time.Sleep(d)
	}
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkLeastLoaded compares round-robin, p2c and least-loaded when
// another caller, which the client cannot see, loads one instance: three
// in-process instances of fixed capacity with load reports in a real
// Consul, a hammer sending 60% of one instance's capacity straight to it,
// and the client's open-loop load on top; also with no hammer. Per
// balancer it reports the hammered instance's share of the client's attempts,
// the client's latency (from when each call was due) and the hammer's, for
// the calls of the last 4s after 2s of warm-up (reports flowing). One run
// moves by tens of percent on a 2-core machine: `make bench` runs it with
// -count 3 and reports the medians. Run with -benchtime 1x.
func BenchmarkLeastLoaded(b *testing.B) {
	agent := testenv.Consul(b)
	c := agent.API()
	capacity := llCapacity()
	for _, hammer := range []bool{true, false} {
		for _, balancer := range []string{client.RoundRobinName, client.P2CName, client.LeastLoadedName} {
			prefix := balancer + "/"
			if hammer {
				prefix = "hammered/" + prefix
			} else {
				prefix = "even/" + prefix
			}
			for unit, v := range leastLoadedRun(b, c, balancer, capacity, hammer) {
				b.ReportMetric(v, prefix+unit)
			}
		}
	}
	b.ReportMetric(llClientShare*capacity, "client_rate")
	b.ReportMetric(llHammerShare*capacity, "hammer_rate")
	b.ReportMetric(capacity, "capacity_per_instance")
}

func leastLoadedRun(b *testing.B, c *api.Client, balancer string, capacity float64, hammer bool) map[string]float64 {
	runtime.GC()
	service := fmt.Sprintf("ll-%d", time.Now().UnixNano())
	ctx, cancel := context.WithCancel(context.Background())
	var (
		addrs   []string
		servers []*server
		done    = make(chan error, 3)
	)
	for i := range 3 {
		svc, err := trimsvc.New(trimsvc.DefaultMaxInputBytes)
		if err != nil {
			b.Fatal(err)
		}
		var meter trimsvc.LoadMeter
		s := startServer(b, fmt.Sprintf("trim-%d", i), 1, meter.Middleware()(newLimited(llConcurrency, llServiceTime, svc)))
		servers = append(servers, s)
		addrs = append(addrs, s.addrs[0])
		r, err := sd.NewLoadReporter(sd.NewClient(c), service, fmt.Sprintf("trim-%d", i), s.addrs[0], "", llInterval, meter.Sample, log.NewNopLogger())
		if err != nil {
			b.Fatal(err)
		}
		go func() { done <- r.Run(ctx) }()
	}
	defer func() {
		cancel()
		for range 3 {
			if err := <-done; err != nil {
				b.Error(err)
			}
		}
		for _, s := range servers {
			s.stop()
		}
	}()

	al := &attemptLog{faulty: addrs[0]}
	endpointer, err := client.NewEndpointer(kitsd.FixedInstancer(addrs), al.factory(client.Factory(trim.Endpoints)), log.NewNopLogger(), client.EndpointerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer endpointer.Close()
	var bal client.Balancer
	switch balancer {
	case client.RoundRobinName:
		bal = client.NewRoundRobin(endpointer)
	case client.P2CName:
		bal = client.NewP2C(endpointer)
	case client.LeastLoadedName:
		// The reports name the instances by service ID: the catalog,
		// through a watch of the service, says which address each is.
		for i, a := range addrs {
			if err := registerService(c, service, fmt.Sprintf("trim-%d", i), a, false); err != nil {
				b.Fatal(err)
			}
		}
		catalog, err := sd.NewInstancer(sd.NewClient(c), log.NewNopLogger(), service, nil, true)
		if err != nil {
			b.Fatal(err)
		}
		defer catalog.Stop()
		w, err := sd.NewLoadWatcher(sd.NewClient(c), service, catalog, log.NewNopLogger())
		if err != nil {
			b.Fatal(err)
		}
		defer w.Stop()
		bal = client.NewLeastLoaded(endpointer, w)
	}
	call, err := client.Retry(bal, client.RetryConfig{})
	if err != nil {
		b.Fatal(err)
	}

	var hammerLoad *loadgen.Run
	if hammer {
		direct, closer, err := client.Factory(trim.Endpoints)(addrs[0])
		if err != nil {
			b.Fatal(err)
		}
		defer closer.Close()
		hammerLoad = loadgen.Start(context.Background(), direct, benchInput, loadgen.Options{Rate: llHammerShare * capacity, Duration: llWarm + llRun})
	}
	load := loadgen.Start(context.Background(), call, benchInput, loadgen.Options{Rate: llClientShare * capacity, Duration: llWarm + llRun})
	time.Sleep(llWarm)
	measured := time.Now()
	total, first := al.total.Load(), al.toFaulty.Load()
	calls, _ := load.Wait()
	total, first = al.total.Load()-total, al.toFaulty.Load()-first
	out := summarizeAfter(calls, measured, "")
	out["first_share"] = float64(first) / max(float64(total), 1)
	out["attempts_call"] = float64(total) / max(out["calls"], 1)
	if hammerLoad != nil {
		hcalls, _ := hammerLoad.Wait()
		for k, v := range summarizeAfter(hcalls, measured, "hammer_") {
			out[k] = v
		}
	}
	return out
}

// callsSince are the calls due from since on.
func callsSince(calls []loadgen.Call, since time.Time) []loadgen.Call {
	var after []loadgen.Call
	for _, c := range calls {
		if !c.Start.Before(since) {
			after = append(after, c)
		}
	}
	return after
}

// summarizeAfter sums up the calls due from since on, their metrics named
// with prefix.
func summarizeAfter(calls []loadgen.Call, since time.Time, prefix string) map[string]float64 {
	s, _ := loadgen.Summarize(callsSince(calls, since), 0)
	return map[string]float64{
		prefix + "calls":    float64(s.Requests),
		prefix + "failures": float64(s.Failures),
		prefix + "p50_ms":   s.P50ms,
		prefix + "p99_ms":   s.P99ms,
		prefix + "p999_ms":  s.P999ms,
		prefix + "max_ms":   s.MaxMs,
	}
}

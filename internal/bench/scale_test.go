package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/metrics/generic"
	kitsd "github.com/go-kit/kit/sd"
	kitconsul "github.com/go-kit/kit/sd/consul"
	"github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/internal/localconsul"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/pb"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
)

// Scale: a service of scaleInstances instances watched by scaleCallers
// callers in this process.
const (
	scaleInstances = 1000
	scaleCallers   = 100
	scaleSubset    = 20
	scaleChanges   = 6 // per row: instances joining and leaving, one at a time
)

// BenchmarkScale watches a service of 1,000 instances with 100 callers in
// one process, against a real Consul agent: a fleet of in-process gRPC
// instances (one server, a loopback listener per instance, each killable
// on its own), registered through the agent's API without health checks
// (passing at once: 1,000 checks would measure the agent, not the
// callers). For each way of building the callers it reports the heap per
// caller, the connections each holds, the CPU this process spends per
// change (an instance joining or leaving; the CPU of a quiet spell of the
// same length subtracted) and the time from the change being in Consul to
// each caller's Endpointer having it:
//
//   - trimkit: client.New, the 100 callers sharing one watch (sd.Instancers)
//     that decodes only what it uses;
//   - trimkit-subset: the same with Subset 20, callers numbered 1..100;
//     then open-loop load (calls per instance and the connections on each),
//     and 10% of the instances closed as a SIGKILL would (listener and
//     connections; deregistered 2s later, as a failing check would) while
//     another 10% join;
//   - trimkit-before: a watch per caller decoding consul/api's structs, as
//     client.New did before;
//   - go-kit: go-kit's sd/consul Instancer and DefaultEndpointer per caller.
//
// Run with -benchtime 1x.
func BenchmarkScale(b *testing.B) {
	agent := testenv.Consul(b)
	c := agent.API()
	fl := startFleet(b, scaleInstances+scaleInstances/10+scaleChanges)
	registerAll(b, c, "scale", fl.addrs[:scaleInstances], 0)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := localconsul.WaitPassing(ctx, c, "trimsvc", localconsul.Count(scaleInstances)); err != nil {
		b.Fatal(err)
	}
	consul := sd.ConsulConfig{Address: agent.URL()}
	// The instances that join and leave in the churn of every row.
	churn := fl.addrs[scaleInstances+scaleInstances/10:]

	rows := []struct {
		name  string
		build func(b *testing.B, i int) scaleCaller
	}{
		{"trimkit-subset", func(b *testing.B, i int) scaleCaller { return newTrimkitCaller(b, consul, scaleSubset, i) }},
		{"trimkit", func(b *testing.B, i int) scaleCaller { return newTrimkitCaller(b, consul, 0, i) }},
		{"trimkit-before", func(b *testing.B, i int) scaleCaller { return newBeforeCaller(b, c) }},
		{"go-kit", func(b *testing.B, i int) scaleCaller { return newGokitCaller(b, c) }},
	}
	// For a look at some rows: SCALE_ROWS, their names, comma-separated;
	// SCALE_CPUPROFILE, a file for the CPU profile of a row's churn.
	only := os.Getenv("SCALE_ROWS")
	for _, row := range rows {
		if only != "" && !slices.Contains(strings.Split(only, ","), row.name) {
			continue
		}
		settle()
		b.Logf("%s: building %d callers", row.name, scaleCallers)
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		callers := make([]scaleCaller, scaleCallers)
		for i := range callers {
			callers[i] = row.build(b, i)
		}
		want := scaleInstances
		if row.name == "trimkit-subset" {
			want = scaleSubset
		}
		if err := waitCallers(callers, want, 60*time.Second); err != nil {
			b.Fatalf("%s: %v", row.name, err)
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		heap := float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc)) / scaleCallers / (1 << 20)
		held := 0
		for _, cl := range callers {
			held += cl.held()
		}

		subset := row.name == "trimkit-subset"
		b.Logf("%s: churn", row.name)
		cpu, allocs, prop := measureChurn(b, c, callers, churn, want, subset)
		b.ReportMetric(cpu, row.name+"_cpu_ms/change")
		b.ReportMetric(allocs/scaleCallers, row.name+"_allocs/change/caller")
		b.ReportMetric(cpu/scaleCallers, row.name+"_cpu_ms/change/caller")
		b.ReportMetric(heap, row.name+"_heap_MiB/caller")
		b.ReportMetric(float64(held)/scaleCallers, row.name+"_conns/caller")
		b.ReportMetric(float64(held)/scaleInstances, row.name+"_conns/instance")
		if !subset { // the subset callers share the trimkit row's watch
			b.ReportMetric(ms(loadgen.Percentile(prop, 0.5)), row.name+"_prop_p50_ms")
			b.ReportMetric(ms(slices.Max(prop)), row.name+"_prop_max_ms")
		}

		if row.name == "trimkit-subset" {
			subsetLoad(b, c, fl, callers)
		}
		for _, cl := range callers {
			cl.close()
		}
	}
}

// settle waits, up to 20s, for this process to be quiet: the callers of
// the row before closed (their connections close after a grace period),
// their garbage collected.
func settle() {
	for range 20 {
		runtime.GC()
		cpu := cpuTime()
		time.Sleep(time.Second)
		if cpuTime()-cpu < 50*time.Millisecond {
			return
		}
	}
}

// scaleCaller is one caller of a row.
type scaleCaller struct {
	endpoints func() int // endpoints the caller holds
	call      endpoint.Endpoint
	close     func()
}

func (c scaleCaller) held() int { return c.endpoints() }

// newTrimkitCaller is a client.New caller with subset (0: every
// instance), the i-th of its row; the row's callers share a watch.
func newTrimkitCaller(b testing.TB, consul sd.ConsulConfig, subset, i int) scaleCaller {
	cfg := client.Config{Consul: consul, Service: "trimsvc",
		CallConfig: client.CallConfig{EndpointerConfig: client.EndpointerConfig{Subset: subset}}}
	if subset > 0 {
		cfg.SubsetCaller = i + 1
	}
	held := generic.NewGauge("instances")
	cfg.Metrics = client.Metrics{Instances: held}
	cl, err := client.New(cfg, trim.Endpoints)
	if err != nil {
		b.Fatal(err)
	}
	return scaleCaller{
		endpoints: func() int { return int(held.Value()) },
		call:      cl.Endpoint(),
		close:     func() { _ = cl.Close() },
	}
}

// newBeforeCaller is a caller as client.New built them before: a watch
// of its own, decoding consul/api's structs.
func newBeforeCaller(b *testing.B, c *api.Client) scaleCaller {
	instancer, err := sd.NewInstancer(sd.NewClient(c), log.NewNopLogger(), "trimsvc", nil, true)
	if err != nil {
		b.Fatal(err)
	}
	held := generic.NewGauge("instances")
	cl, err := client.NewFromInstancer(instancer, client.CallConfig{EndpointerConfig: client.EndpointerConfig{Metrics: client.Metrics{Instances: held}}}, trim.Endpoints)
	if err != nil {
		b.Fatal(err)
	}
	return scaleCaller{
		endpoints: func() int { return int(held.Value()) },
		call:      cl.Endpoint(),
		close:     func() { _ = cl.Close(); instancer.Stop() },
	}
}

// newGokitCaller is go-kit's stock stack: its consul Instancer, its
// DefaultEndpointer, round robin and retry.
func newGokitCaller(b *testing.B, c *api.Client) scaleCaller {
	instancer := kitconsul.NewInstancer(kitconsul.NewClient(c), log.NewNopLogger(), "trimsvc", nil, true)
	endpointer := kitsd.NewEndpointer(instancer, gokitFactory, log.NewNopLogger())
	return scaleCaller{
		endpoints: func() int { eps, _ := endpointer.Endpoints(); return len(eps) },
		call:      lb.Retry(3, 500*time.Millisecond, lb.NewRoundRobin(endpointer)),
		close:     func() { instancer.Stop(); endpointer.Close() },
	}
}

// waitCallers waits until every caller holds want endpoints.
func waitCallers(callers []scaleCaller, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		done := 0
		for _, c := range callers {
			if c.held() == want {
				done++
			}
		}
		if done == len(callers) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d callers hold %d endpoints", len(callers)-done, len(callers), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// measureChurn makes scaleChanges changes, an instance of churn joining,
// then leaving, and so on, one at a time, each once every caller has the
// one before. It returns the CPU this process spent per change, less that
// of a quiet spell of the same length (the watcher polling the callers),
// and the time from each change being in Consul to each caller having it.
// A caller with a subset holds want endpoints throughout: a change shows
// in its Endpointer only when it moves its subset, and what is measured
// for it is the time to every caller's Instancer having it.
func measureChurn(b *testing.B, c *api.Client, callers []scaleCaller, churn []string, want int, subset bool) (cpuMS, allocs float64, props []time.Duration) {
	var (
		cpu  time.Duration
		wall time.Duration
		mem  runtime.MemStats
	)
	runtime.ReadMemStats(&mem)
	mallocs := mem.Mallocs
	if path := os.Getenv("SCALE_CPUPROFILE"); path != "" { // the churn's profile, for a look at what a change costs
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	for i := range scaleChanges {
		id := fmt.Sprintf("churn-%d", i/2)
		addr := churn[i/2]
		start, cpu0 := time.Now(), cpuTime()
		if i%2 == 0 {
			register(b, c, id, addr, false)
		} else if err := c.Agent().ServiceDeregister(id); err != nil {
			b.Fatal(err)
		}
		changed := time.Now()
		target := want + 1 - i%2
		seen := make([]time.Duration, len(callers))
		deadline := changed.Add(60 * time.Second)
		for left := len(callers); left > 0 && !subset; {
			for j, cl := range callers {
				if seen[j] == 0 && cl.held() == target {
					seen[j] = time.Since(changed)
					left--
				}
			}
			if time.Now().After(deadline) {
				b.Fatalf("change %d: %d callers do not have it after 60s", i, left)
			}
			time.Sleep(time.Millisecond)
		}
		if subset {
			// A change moves a subset only now and then: nothing to wait
			// for but the shared watch, as fast as the trimkit row's.
			seen = nil
			time.Sleep(300 * time.Millisecond)
		}
		// Let the work of the change end (connections closing, goroutines
		// exiting) within the window.
		time.Sleep(200 * time.Millisecond)
		cpu += cpuTime() - cpu0
		wall += time.Since(start)
		props = append(props, seen...)
	}
	runtime.ReadMemStats(&mem)
	mallocs = mem.Mallocs - mallocs
	// The same length of quiet, polling as above.
	quiet0, quietStart := cpuTime(), time.Now()
	for time.Since(quietStart) < wall {
		for _, cl := range callers {
			_ = cl.held()
		}
		time.Sleep(time.Millisecond)
	}
	quiet := cpuTime() - quiet0
	if len(props) == 0 {
		props = []time.Duration{0}
	}
	return ms(max(cpu-quiet, 0)) / scaleChanges, float64(mallocs) / scaleChanges, props
}

// subsetLoad runs open-loop load over the subset callers: first steady,
// for the calls and connections per instance; then 10% of the instances
// are closed as a SIGKILL would close them (deregistered 2s later) while
// another 10% join. It reports the spread and the failed calls.
func subsetLoad(b *testing.B, c *api.Client, fl *scaleFleet, callers []scaleCaller) {
	rate := 1000.0 // calls a second, over all callers: the 2 cores hold the callers and the fleet
	if r, err := strconv.ParseFloat(os.Getenv("SCALE_RATE"), 64); err == nil {
		rate = r
	}
	var next atomic.Uint64
	call := func(ctx context.Context, req any) (any, error) {
		return callers[next.Add(1)%uint64(len(callers))].call(ctx, req)
	}
	// A subset's members are dialled at once: wait for the connections.
	deadline := time.Now().Add(30 * time.Second)
	for total(fl.connCounts(fl.addrs)) < scaleCallers*scaleSubset {
		if time.Now().After(deadline) {
			b.Fatalf("%d connections to the fleet, want %d", total(fl.connCounts(fl.addrs)), scaleCallers*scaleSubset)
		}
		time.Sleep(10 * time.Millisecond)
	}
	warm := loadgen.Start(context.Background(), call, "  scale  ", loadgen.Options{Rate: rate / 2, Duration: 2 * time.Second, SummaryOnly: true})
	warm.Wait()
	fl.resetCalls()
	steady := loadgen.Start(context.Background(), call, "  scale  ", loadgen.Options{Rate: rate, Duration: 20 * time.Second, SummaryOnly: true})
	steady.Wait()
	sum, errs := steady.Summary()
	calls := fl.callCounts(fl.addrs[:scaleInstances])
	conns := fl.connCounts(fl.addrs[:scaleInstances])
	b.ReportMetric(spreadOf(calls), "trimkit-subset_calls_max/mean")
	b.ReportMetric(float64(slices.Max(conns)), "trimkit-subset_tcp_conns/instance_max")
	b.ReportMetric(mean(conns), "trimkit-subset_tcp_conns/instance_mean")
	if sum.Failures > 0 {
		b.Logf("subset, steady: %d failed calls: %v", sum.Failures, errs)
	}
	b.ReportMetric(float64(sum.Failures), "trimkit-subset_steady_failed")
	b.ReportMetric(sum.P999ms, "trimkit-subset_steady_p99.9_ms")

	// The fault: 10% closed, 10% joining, under the same load.
	rng := rand.New(rand.NewPCG(1, 2))
	victims := rng.Perm(scaleInstances)[:scaleInstances/10]
	joiners := fl.addrs[scaleInstances : scaleInstances+scaleInstances/10]
	run := loadgen.Start(context.Background(), call, "  scale  ", loadgen.Options{Rate: rate, Duration: 12 * time.Second, SummaryOnly: true})
	time.Sleep(time.Second)
	// A rolling replacement, over 4s: one instance killed and one joining
	// every 40ms; a killed one leaves the catalog 2s later, as its failing
	// check would take it out.
	var gone sync.WaitGroup
	for k, v := range victims {
		fl.kill(fl.addrs[v])
		register(b, c, fmt.Sprintf("scale-%d", scaleInstances+k), joiners[k], false)
		gone.Go(func() {
			time.Sleep(2 * time.Second)
			if err := c.Agent().ServiceDeregister(fmt.Sprintf("scale-%d", v)); err != nil {
				b.Error(err)
			}
		})
		time.Sleep(40 * time.Millisecond)
	}
	gone.Wait()
	run.Wait()
	sum, errs = run.Summary()
	if sum.Failures > 0 {
		b.Logf("subset under churn: %d failed calls: %q", sum.Failures, errs)
	}
	b.ReportMetric(float64(sum.Requests), "trimkit-subset_churn_calls")
	b.ReportMetric(float64(sum.Failures), "trimkit-subset_churn_failed")
	b.ReportMetric(sum.P999ms, "trimkit-subset_churn_p99.9_ms")
	b.ReportMetric(sum.MaxMs, "trimkit-subset_churn_max_ms")
}

func total(counts []int) int {
	n := 0
	for _, c := range counts {
		n += c
	}
	return n
}

// spreadOf is max/mean of counts.
func spreadOf(counts []int) float64 { return float64(slices.Max(counts)) / mean(counts) }

func mean(counts []int) float64 { return float64(total(counts)) / float64(len(counts)) }

// registerAll registers addrs as instances <prefix>-<first>,
// <prefix>-<first+1>, and so on, of trimsvc without checks, 16 at a time.
func registerAll(b testing.TB, c *api.Client, prefix string, addrs []string, first int) {
	var wg sync.WaitGroup
	errs := make(chan error, len(addrs))
	sem := make(chan struct{}, 16)
	for i, addr := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := registerErr(c, fmt.Sprintf("%s-%d", prefix, first+i), addr, false); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// scaleFleet is in-process trim instances: one gRPC server, a loopback
// listener per instance. It counts the calls and the open connections of
// each, and can close one as a SIGKILL would (its listener and every
// connection it accepted).
type scaleFleet struct {
	addrs []string
	grpc  *grpc.Server
	wg    sync.WaitGroup

	mu    sync.Mutex
	lis   map[string]*countingListener
	calls map[string]int
}

func startFleet(tb testing.TB, n int) *scaleFleet {
	tb.Helper()
	svc, err := trimsvc.New(trimsvc.DefaultMaxInputBytes)
	if err != nil {
		tb.Fatal(err)
	}
	fl := &scaleFleet{lis: map[string]*countingListener{}, calls: map[string]int{}}
	fl.grpc = grpc.NewServer(grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if p, ok := peer.FromContext(ctx); ok && p.LocalAddr != nil {
			fl.mu.Lock()
			fl.calls[p.LocalAddr.String()]++
			fl.mu.Unlock()
		}
		return h(ctx, req)
	}))
	pb.RegisterTrimServer(fl.grpc, trim.NewGRPCServer(trimsvc.NewServerSet(svc), "scale", log.NewNopLogger()))
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		cl := &countingListener{Listener: l, conns: map[net.Conn]struct{}{}}
		fl.addrs = append(fl.addrs, l.Addr().String())
		fl.lis[l.Addr().String()] = cl
		fl.wg.Add(1)
		go func() {
			defer fl.wg.Done()
			_ = fl.grpc.Serve(cl)
		}()
	}
	tb.Cleanup(func() {
		fl.grpc.Stop()
		fl.wg.Wait()
	})
	return fl
}

func (fl *scaleFleet) resetCalls() {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	clear(fl.calls)
}

func (fl *scaleFleet) callCounts(addrs []string) []int {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	out := make([]int, len(addrs))
	for i, a := range addrs {
		out[i] = fl.calls[a]
	}
	return out
}

func (fl *scaleFleet) connCounts(addrs []string) []int {
	out := make([]int, len(addrs))
	for i, a := range addrs {
		out[i] = fl.lis[a].open()
	}
	return out
}

// kill closes the instance at addr as a SIGKILL would.
func (fl *scaleFleet) kill(addr string) { fl.lis[addr].kill() }

// countingListener counts the connections it accepted that are open.
type countingListener struct {
	net.Listener
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	killed bool
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.killed {
		c.Close()
		return nil, net.ErrClosed
	}
	tc := &trackedConn{Conn: c, l: l}
	l.conns[tc] = struct{}{}
	return tc, nil
}

func (l *countingListener) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

func (l *countingListener) kill() {
	l.mu.Lock()
	l.killed = true
	conns := make([]net.Conn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	_ = l.Listener.Close()
	for _, c := range conns {
		if tc, ok := c.(*trackedConn); ok {
			if t, ok := tc.Conn.(*net.TCPConn); ok {
				_ = t.SetLinger(0) // a reset, as the kernel sends for a killed process's sockets
			}
		}
		_ = c.Close()
	}
}

type trackedConn struct {
	net.Conn
	l    *countingListener
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// cpuTime is the user and system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

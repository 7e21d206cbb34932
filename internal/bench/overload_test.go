package bench

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/metrics"
	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"
	"google.golang.org/grpc"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/pb"
	"github.com/trimkit/trimkit/transport/grpcserver"
	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
)

// The overload runs: three in-process servers whose bottleneck is the
// service's own (olSlots calls at once, olService each), open-loop load at
// multiples of their capacity, olWarm to reach a steady state, then olRun
// measured.
const (
	olSlots   = 5
	olService = 20 * time.Millisecond
	olWarm    = 3 * time.Second
	olRun     = 4 * time.Second
)

var olLoads = []float64{0.5, 1, 2, 4}

// bottleneck is a trim service with a fixed capacity: slots calls at a
// time, each taking service; the rest wait for a slot. Like a CPU, it does
// not notice a caller that has gone: a call that waited works all the
// same, and counts as wasted when its caller was gone by its end.
type bottleneck struct {
	slots   chan struct{}
	service time.Duration
	next    trimsvc.Service
	served  atomic.Int64 // calls that got a slot and worked
	wasted  atomic.Int64 // of those, calls whose caller had gone by their end

	mu   sync.Mutex
	busy int       // slots in use
	avg  float64   // busy / slots, averaged over the last olBusyTau or so
	last time.Time // of avg
}

// olBusyTau is how far back a bottleneck's utilization looks.
const olBusyTau = 200 * time.Millisecond

func newBottleneck(slots int, service time.Duration, next trimsvc.Service) *bottleneck {
	return &bottleneck{slots: make(chan struct{}, slots), service: service, next: next, last: time.Now()}
}

func (b *bottleneck) TrimSpace(ctx context.Context, s string) (string, error) {
	b.slots <- struct{}{}
	b.use(1)
	time.Sleep(b.service)
	b.use(-1)
	<-b.slots
	b.served.Add(1)
	if ctx.Err() != nil {
		b.wasted.Add(1)
	}
	return b.next.TrimSpace(ctx, s)
}

// use adds d to the slots in use.
func (b *bottleneck) use(d int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.decay(time.Now())
	b.busy += d
}

// decay moves avg to now. b.mu is held.
func (b *bottleneck) decay(now time.Time) {
	w := 1 - math.Exp(-float64(now.Sub(b.last))/float64(olBusyTau))
	b.avg += (float64(b.busy)/float64(cap(b.slots)) - b.avg) * w
	b.last = now
}

// utilization is the share of its slots in use, lately: what a service
// that knows its bottleneck gives grpcserver.Limits.Utilization.
func (b *bottleneck) utilization() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.decay(time.Now())
	return b.avg
}

// olServer is how an overload row's servers admit calls.
type olServer struct {
	concurrency func() grpcserver.ConcurrencyLimit // nil: the default, adaptive
	omitLoad    bool
	utilization bool // the bottleneck's utilization in the answers
}

// olRow is one of the compared stacks: its servers and its client.
type olRow struct {
	name   string
	server olServer
	build  func(addrs []string, al *attemptLog) (endpoint.Endpoint, func())
}

func olRows() []olRow {
	noLimit := func() grpcserver.ConcurrencyLimit { return grpcserver.NoConcurrencyLimit() }
	noThrottle := client.RetryConfig{Throttle: client.Throttle{Disabled: true}}
	return []olRow{
		// Today's servers (only MaxCallsInFlight) and client (p2c by
		// latency; nothing to throttle on).
		{"no-limiter", olServer{concurrency: noLimit, omitLoad: true}, trimkitRow(client.CallConfig{Balancer: client.P2CName, Retry: noThrottle})},
		// The adaptive limit alone: no load in answers, no throttling;
		// the client retries a shed call elsewhere.
		{"limiter", olServer{omitLoad: true}, trimkitRow(client.CallConfig{Balancer: client.P2CName, Retry: noThrottle})},
		// Everything, as defaults give it: the limit, the load in
		// answers for p2c, client throttling.
		{"limiter+load+throttle", olServer{}, trimkitRow(client.CallConfig{Balancer: client.P2CName})},
		// All defaults, and the service's own utilization in its answers.
		{"+utilization", olServer{utilization: true}, trimkitRow(client.CallConfig{Balancer: client.P2CName})},
		{"gokit-stock", olServer{}, func(addrs []string, al *attemptLog) (endpoint.Endpoint, func()) {
			endpointer := kitsd.NewEndpointer(kitsd.FixedInstancer(addrs), al.factory(gokitFactory), log.NewNopLogger())
			return lb.Retry(3, 500*time.Millisecond, lb.NewRoundRobin(endpointer)), endpointer.Close
		}},
	}
}

// BenchmarkOverload offers each row open-loop load at 0.5x, 1x, 2x and 4x
// the capacity of three in-process servers whose bottleneck is the
// service's (olSlots calls at once, olService each: capacity = 3 x olSlots
// / olService, measured), and reports, over olRun after olWarm, goodput
// (successful calls a second, and as a share of capacity), p50/p99/max of
// successful calls (from when each was due), failures, attempts per call,
// wasted work (calls the servers ran for callers who had gone, as a share
// of the calls they ran) and the spread of calls over the instances
// (max/mean). Then the full stack against one instance of half the
// capacity: its share of the calls against its share of the capacity.
// Run with -benchtime 1x.
func BenchmarkOverload(b *testing.B) {
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	slotRate := olSlotRate()
	capacity := 3 * olSlots * slotRate
	charts := newLatencyCharts("overload", 250*time.Millisecond)
	defer charts.write(b)
	for _, row := range olRows() {
		if row.server.utilization {
			continue // for the unequal instances only
		}
		for _, load := range olLoads {
			prefix := fmt.Sprintf("%s/%gx/", row.name, load)
			for unit, v := range olCell(b, row, []int{olSlots, olSlots, olSlots}, load*capacity, capacity, charts, fmt.Sprintf("%gx", load)) {
				b.ReportMetric(v, prefix+unit)
			}
		}
	}
	// One instance of half the capacity: the limit alone, all defaults
	// (the load in answers), and the service's utilization in answers.
	slots := []int{2 * olSlots, 2 * olSlots, olSlots}
	unequal := 5 * olSlots * slotRate
	for _, row := range olRows()[1:4] {
		for _, load := range olLoads {
			prefix := fmt.Sprintf("unequal/%s/%gx/", row.name, load)
			for unit, v := range olCell(b, row, slots, load*unequal, unequal, charts, fmt.Sprintf("unequal-%gx", load)) {
				b.ReportMetric(v, prefix+unit)
			}
		}
	}
	b.ReportMetric(capacity, "capacity_per_s")
	b.ReportMetric(unequal, "unequal_capacity_per_s")
	b.ReportMetric(olSlots, "slots")
	b.ReportMetric(ms(olService), "service_ms")
}

// olSlotRate is the calls a second one slot serves.
func olSlotRate() float64 { return sleepRate(olService, 50) }

func olCell(b *testing.B, row olRow, slots []int, rate, capacity float64, charts *latencyCharts, caseName string) map[string]float64 {
	runtime.GC()
	var (
		addrs   []string
		servers []*server
		necks   []*bottleneck
	)
	for i, n := range slots {
		svc, err := trimsvc.New(trimsvc.DefaultMaxInputBytes)
		if err != nil {
			b.Fatal(err)
		}
		neck := newBottleneck(n, olService, svc)
		limits := grpcserver.Limits{OmitLoad: row.server.omitLoad}
		if row.server.utilization {
			limits.Utilization = neck.utilization
		}
		if row.server.concurrency != nil {
			limits.Concurrency = row.server.concurrency()
		}
		s := startServer(b, fmt.Sprintf("trim-%d", i), 1, neck, limits.ServerOptions()...)
		servers, necks = append(servers, s), append(necks, neck)
		addrs = append(addrs, s.addrs[0])
	}
	al := &attemptLog{}
	e, closeRow := row.build(addrs, al)
	load := loadgen.Start(context.Background(), e, benchInput, loadgen.Options{Rate: rate, Duration: olWarm + olRun})
	time.Sleep(olWarm)
	measured := time.Now()
	attempts := al.total.Load()
	served, wasted := make([]int64, len(necks)), int64(0)
	for i, n := range necks {
		served[i] = n.served.Load()
		wasted -= n.wasted.Load()
	}
	calls, _ := load.Wait()
	charts.add(caseName, row.name, calls, measured)
	attempts = al.total.Load() - attempts
	var total int64
	for i, n := range necks {
		served[i] = n.served.Load() - served[i]
		total += served[i]
		wasted += n.wasted.Load()
	}
	closeRow()
	for _, s := range servers {
		s.stop()
	}

	calls = callsSince(calls, measured)
	var ok []time.Duration
	failures := 0
	for _, c := range calls {
		if c.Err != nil {
			failures++
			continue
		}
		ok = append(ok, c.Took)
	}
	slices.Sort(ok)
	pct := func(p float64) float64 { return ms(loadgen.Percentile(ok, p)) }
	goodput := float64(len(ok)) / olRun.Seconds()
	out := map[string]float64{
		"offered_per_s":  rate,
		"goodput_per_s":  goodput,
		"goodput_share":  goodput / capacity,
		"p50_ms":         pct(50),
		"p99_ms":         pct(99),
		"max_ms":         pct(100),
		"failures":       float64(failures),
		"calls":          float64(len(calls)),
		"attempts_call":  float64(attempts) / max(float64(len(calls)), 1),
		"wasted_share":   float64(wasted) / max(float64(total), 1),
		"spread_max_avg": float64(slices.Max(served)) / max(float64(total)/float64(len(served)), 1),
	}
	// The last instance's share of the calls served, and of the capacity.
	out["last_share"] = float64(served[len(served)-1]) / max(float64(total), 1)
	var slotsTotal int
	for _, n := range slots {
		slotsTotal += n
	}
	out["last_capacity_share"] = float64(slots[len(slots)-1]) / float64(slotsTotal)
	return out
}

// The IO-bound run (issue #28): three instances of a service whose calls
// wait ioService on IO (no CPU: the machine is never the bottleneck, and
// more calls at once take no longer), ioCallers callers sending ioRate
// calls a second between them, open loop, each through its own client
// stack (round-robin, 3 attempts within ioRetryTimeout). ioTermAt into
// the ioRun, one instance leaves as SIGTERM makes trimsvc leave
// (grpcserver.Instance: NOT_SERVING, out of discovery, drained, stopped
// gracefully), and the other two take its share: about 20 calls in flight
// each before, 30 after.
const (
	ioService      = 300 * time.Millisecond
	ioRate         = 200
	ioCallers      = 100
	ioRetryTimeout = 2 * time.Second
	ioRun          = 10 * time.Second
	ioTermAt       = 4 * time.Second
)

// ioWait is a trim service whose calls wait d, as on a database or
// another service, before they answer.
type ioWait struct {
	d    time.Duration
	next trimsvc.Service
}

func (s ioWait) TrimSpace(ctx context.Context, str string) (string, error) {
	t := time.NewTimer(s.d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	return s.next.TrimSpace(ctx, str)
}

// limitGauge is the Limit gauge of a server's admission: the limit now,
// and the least it was since it was last reset.
type limitGauge struct {
	now, least atomic.Int64
}

func (g *limitGauge) With(...string) metrics.Gauge { return g }
func (g *limitGauge) Add(d float64)                { g.Set(float64(g.now.Load()) + d) }
func (g *limitGauge) Set(v float64) {
	n := int64(v)
	g.now.Store(n)
	for {
		l := g.least.Load()
		if l != 0 && l <= n || g.least.CompareAndSwap(l, n) {
			return
		}
	}
}

// resetLeast starts the least over from the limit now.
func (g *limitGauge) resetLeast() { g.least.Store(g.now.Load()) }

// listInstancer is a discovery whose list the run changes, as Consul's
// changes when an instance deregisters.
type listInstancer struct {
	mu   sync.Mutex
	list []string
	chs  []chan<- kitsd.Event
}

func (l *listInstancer) Register(ch chan<- kitsd.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.chs = append(l.chs, ch)
	ch <- kitsd.Event{Instances: slices.Clone(l.list)}
}

func (l *listInstancer) Deregister(ch chan<- kitsd.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.chs = slices.DeleteFunc(l.chs, func(c chan<- kitsd.Event) bool { return c == ch })
}

func (l *listInstancer) Stop() {}

// set sends list to every watcher.
func (l *listInstancer) set(list []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.list = list
	for _, ch := range l.chs {
		ch <- kitsd.Event{Instances: slices.Clone(list)}
	}
}

// ioInstance is one instance of the IO-bound run, served by a
// grpcserver.Instance with the default Limits (the adaptive limit).
type ioInstance struct {
	addr  string
	limit *limitGauge
	shed  loadgen.Counter
	leave context.CancelFunc // SIGTERM
	ended chan error
}

func startIOInstance(b *testing.B, id string) *ioInstance {
	svc, err := trimsvc.New(trimsvc.DefaultMaxInputBytes)
	if err != nil {
		b.Fatal(err)
	}
	in := &ioInstance{limit: &limitGauge{}, ended: make(chan error, 1)}
	limits := grpcserver.Limits{Metrics: grpcserver.AdmissionMetrics{Limit: in.limit, Shed: &in.shed}}
	s := grpc.NewServer(limits.ServerOptions()...)
	pb.RegisterTrimServer(s, trim.NewGRPCServer(trimsvc.NewServerSet(ioWait{ioService, svc}), id, log.NewNopLogger()))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	in.addr = lis.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	in.leave = cancel
	go func() { in.ended <- grpcserver.Instance{Server: s, Listener: limits.Listener(lis)}.Run(ctx) }()
	return in
}

// BenchmarkOverloadIOBound is issue #28's case: three instances of an
// IO-bound service (ioService a call) under ioRate calls a second from
// ioCallers callers, about 20 calls in flight per instance; ioTermAt into
// the run one instance leaves (SIGTERM: out of discovery, drained), and
// the two left carry about 30 each, more than the adaptive limit's
// Initial. No call may fail: a survivor's limit must follow the load
// before the callers' retries give up. It reports the calls and failures,
// p50/p99/p99.9/max (from when each call was due), attempts per call,
// calls shed, and the survivors' limits: the least after the SIGTERM and
// at the end. Run with -benchtime 1x.
func BenchmarkOverloadIOBound(b *testing.B) {
	runtime.GC()
	var ins []*ioInstance
	var addrs []string
	for i := range 3 {
		in := startIOInstance(b, fmt.Sprintf("io-%d", i))
		ins, addrs = append(ins, in), append(addrs, in.addr)
	}
	defer func() {
		for _, in := range ins {
			in.leave()
		}
		for _, in := range ins {
			if err := <-in.ended; err != nil {
				b.Error(err)
			}
		}
	}()
	discovery := &listInstancer{list: addrs}
	al := &attemptLog{}
	var callers []endpoint.Endpoint
	for range ioCallers {
		endpointer, err := client.NewEndpointer(discovery, al.factory(client.Factory(trim.Endpoints)), log.NewNopLogger(), client.EndpointerConfig{})
		if err != nil {
			b.Fatal(err)
		}
		defer endpointer.Close()
		call, err := client.Retry(client.NewRoundRobin(endpointer), client.RetryConfig{Timeout: ioRetryTimeout})
		if err != nil {
			b.Fatal(err)
		}
		callers = append(callers, call)
	}
	// Each call comes from one of the callers, at random.
	e := func(ctx context.Context, req any) (any, error) { return callers[rand.N(len(callers))](ctx, req) }

	began := time.Now()
	load := loadgen.Start(context.Background(), e, benchInput, loadgen.Options{Rate: ioRate, Duration: ioRun})
	time.Sleep(ioTermAt)
	gone, survivors := ins[0], ins[1:]
	for _, in := range survivors {
		in.limit.resetLeast()
	}
	b.Logf("SIGTERM %s; survivors' limits %d, %d", gone.addr, survivors[0].limit.now.Load(), survivors[1].limit.now.Load())
	gone.leave()
	discovery.set(addrs[1:])
	calls, _ := load.Wait()

	var ok []time.Duration
	failures := 0
	for _, c := range calls {
		if c.Err != nil {
			failures++
			if failures <= 3 {
				b.Logf("failure (due %v into the run): %v", c.Start.Sub(began).Round(time.Millisecond), c.Err)
			}
			continue
		}
		ok = append(ok, c.Took)
	}
	slices.Sort(ok)
	pct := func(p float64) float64 { return ms(loadgen.Percentile(ok, p)) }
	var shed int64
	for _, in := range ins {
		shed += in.shed.Value()
	}
	b.ReportMetric(float64(len(calls)), "calls")
	b.ReportMetric(float64(failures), "failed")
	b.ReportMetric(pct(50), "p50_ms")
	b.ReportMetric(pct(99), "p99_ms")
	b.ReportMetric(pct(99.9), "p99.9_ms")
	b.ReportMetric(pct(100), "max_ms")
	b.ReportMetric(float64(al.total.Load())/max(float64(len(calls)), 1), "attempts_call")
	b.ReportMetric(float64(shed), "shed")
	for i, in := range survivors {
		b.ReportMetric(float64(in.limit.least.Load()), fmt.Sprintf("survivor%d_least_limit", i+1))
		b.ReportMetric(float64(in.limit.now.Load()), fmt.Sprintf("survivor%d_end_limit", i+1))
	}
}

package bench

import (
	"context"
	"fmt"
	"io"
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
	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/balancer/leastrequest" // least_request_experimental, for grpc-lr
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/defaults"
	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/pb"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
)

// The gray-failure runs: open-loop load at grayRate calls a second,
// grayWarm healthy, then grayRun with the fault.
const (
	grayRate = 1000
	grayWarm = 500 * time.Millisecond
	grayRun  = 2 * time.Second
	// grayReps is how many times each cell runs, on fresh servers: a pause
	// of the machine's own (a 2-core VM) inside one run moves its p99, so a
	// cell reports the median of its runs.
	grayReps = 3
	// overloadRun is overloaded's run: a retry budget is about sustained
	// load, and its floor (MinPerSecond x TTL retries) is there from the
	// start, so it is measured over one TTL.
	overloadRun = 10 * time.Second
	hedgeFor    = 3 * time.Millisecond // rr+hedge's HedgeAfter
	stallFor    = 20 * time.Millisecond
	stallEach   = 40 * time.Millisecond
)

// A fault is what the faulty instance (or, overloaded, every instance) does
// once the fault begins.
type fault int

const (
	healthy    fault = iota
	slow             // adds 10x the healthy median latency to every call
	stall            // freezes, health included, for 20ms of every 40ms
	hung             // never answers, health included; the connection stays open
	dead             // the process is gone: connection refused
	overloaded       // every instance answers Unavailable to half the calls
	erroring         // answers every trim call with Internal at once (a black hole); health passes
	flaky            // answers half the trim calls, at random, with Internal at once; health passes
)

var faultNames = []string{"healthy", "slow", "stall", "hung", "dead", "overloaded", "erroring", "flaky"}

// faultyServer is an in-process trim server with grpc.health.v1 whose
// behaviour a fault changes.
type faultyServer struct {
	addr   string
	grpc   *grpc.Server
	wg     sync.WaitGroup
	fault  atomic.Int32
	slowBy time.Duration
	since  time.Time // of the fault, for stall's rhythm
}

func startFaulty(tb testing.TB, id string, slowBy time.Duration) *faultyServer {
	tb.Helper()
	s := &faultyServer{slowBy: slowBy}
	s.grpc = grpc.NewServer(grpc.UnaryInterceptor(s.intercept))
	svc, err := trimsvc.New(trimsvc.DefaultMaxInputBytes)
	if err != nil {
		tb.Fatal(err)
	}
	pb.RegisterTrimServer(s.grpc, trim.NewGRPCServer(trimsvc.NewServerSet(svc), id, log.NewNopLogger()))
	healthpb.RegisterHealthServer(s.grpc, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s.addr = lis.Addr().String()
	s.wg.Add(1)
	go func() { defer s.wg.Done(); _ = s.grpc.Serve(lis) }()
	tb.Cleanup(s.stop)
	return s
}

func (s *faultyServer) stop() { s.grpc.Stop(); s.wg.Wait() }

func (s *faultyServer) set(f fault) {
	s.since = time.Now()
	s.fault.Store(int32(f))
	if f == dead {
		s.stop()
	}
}

func (s *faultyServer) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	isTrim := info.FullMethod == pb.Trim_TrimSpace_FullMethodName
	switch fault(s.fault.Load()) {
	case slow:
		if isTrim {
			time.Sleep(s.slowBy)
		}
	case stall:
		if phase := time.Since(s.since) % stallEach; phase < stallFor {
			time.Sleep(stallFor - phase)
		}
	case hung:
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	case overloaded:
		if isTrim && rand.IntN(2) == 0 {
			return nil, status.Error(codes.Unavailable, "overloaded")
		}
	case erroring:
		if isTrim {
			return nil, status.Error(codes.Internal, "database pool broken")
		}
	case flaky:
		if isTrim && rand.IntN(2) == 0 {
			return nil, status.Error(codes.Internal, "database pool broken")
		}
	}
	return handler(ctx, req)
}

// attemptLog counts the attempts each instance gets and when the faulty
// one last got one.
type attemptLog struct {
	faulty   string
	total    atomic.Int64
	toFaulty atomic.Int64
	last     atomic.Int64 // unix ns of the last attempt to the faulty one
}

// factory is f with every endpoint it makes counted in a.
func (a *attemptLog) factory(f kitsd.Factory) kitsd.Factory {
	return func(instance string) (endpoint.Endpoint, io.Closer, error) {
		e, c, err := f(instance)
		if err != nil {
			return nil, nil, err
		}
		return a.wrap(instance, e), c, nil
	}
}

func (a *attemptLog) wrap(instance string, e endpoint.Endpoint) endpoint.Endpoint {
	return func(ctx context.Context, req interface{}) (interface{}, error) {
		a.count(instance)
		return e(ctx, req)
	}
}

func (a *attemptLog) count(instance string) {
	a.total.Add(1)
	if instance == a.faulty {
		a.toFaulty.Add(1)
		a.last.Store(time.Now().UnixNano())
	}
}

// intercept counts, on a grpc.ClientConn, the call and the instance it
// went to (the last attempt's, with grpc's own retries).
func (a *attemptLog) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	var p peer.Peer
	err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Peer(&p))...)
	if p.Addr != nil {
		a.count(p.Addr.String())
	}
	return err
}

// leastRequestConfig is grpc-go's least_request balancer with a retry
// policy for UNAVAILABLE, as a grpc-go program over a Consul resolver
// would set it up.
const leastRequestConfig = `{
  "loadBalancingConfig": [{"least_request_experimental": {"choiceCount": 2}}],
  "methodConfig": [{
    "name": [{"service": "pb.Trim"}],
    "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.01s", "maxBackoff": "0.1s", "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}
  }]
}`

// grpcLeastRequest is one ClientConn over addrs with grpc-go's
// least_request, each call bounded by the same 500ms as the other rows'.
func grpcLeastRequest(addrs []string, al *attemptLog) (endpoint.Endpoint, func()) {
	conn, err := manualConn(addrs, leastRequestConfig, grpc.WithUnaryInterceptor(al.intercept))
	if err != nil {
		panic(err)
	}
	e := trim.Endpoints(conn)
	return func(ctx context.Context, req interface{}) (interface{}, error) {
		ctx, cancel := context.WithTimeout(ctx, defaults.RetryTimeout)
		defer cancel()
		return e(ctx, req)
	}, func() { conn.Close() }
}

// grayRow builds one of the compared stacks over addrs, recording attempts
// in log, and returns its endpoint and a closer.
type grayRow struct {
	name  string
	build func(addrs []string, log *attemptLog) (endpoint.Endpoint, func())
}

// trimkitRow is trimkit's stack from its pieces, as NewFromInstancer builds
// it, with a Factory that records attempts.
func trimkitRow(cfg client.CallConfig) func([]string, *attemptLog) (endpoint.Endpoint, func()) {
	return func(addrs []string, al *attemptLog) (endpoint.Endpoint, func()) {
		endpointer, err := client.NewEndpointer(kitsd.FixedInstancer(addrs), al.factory(client.Factory(trim.Endpoints)), log.NewNopLogger(), cfg.EndpointerConfig)
		if err != nil {
			panic(err)
		}
		var balancer client.Balancer = client.NewRoundRobin(endpointer)
		if cfg.Balancer == client.P2CName {
			balancer = client.NewP2C(endpointer)
		}
		call, err := client.Retry(balancer, cfg.Retry)
		if err != nil {
			panic(err)
		}
		return call, func() { endpointer.Close() }
	}
}

func grayRows() []grayRow {
	noEjection := client.EndpointerConfig{Ejection: client.Ejection{Disabled: true}}
	noBudget := client.RetryBudget{Disabled: true}
	return []grayRow{
		{"gokit-stock", func(addrs []string, al *attemptLog) (endpoint.Endpoint, func()) {
			endpointer := kitsd.NewEndpointer(kitsd.FixedInstancer(addrs), al.factory(gokitFactory), log.NewNopLogger())
			return lb.Retry(3, 500*time.Millisecond, lb.NewRoundRobin(endpointer)), endpointer.Close
		}},
		{"grpc-lr", grpcLeastRequest},
		{"rr", trimkitRow(client.CallConfig{Retry: client.RetryConfig{Budget: noBudget}, EndpointerConfig: noEjection})},
		{"rr+eject", trimkitRow(client.CallConfig{})},
		{"p2c", trimkitRow(client.CallConfig{Balancer: client.P2CName})},
		{"rr+hedge", trimkitRow(client.CallConfig{Retry: client.RetryConfig{HedgeAfter: hedgeFor}})},
	}
}

// BenchmarkGrayFailure runs every row (the native face's too, through a
// Consul dev agent) against every fault: three fresh
// in-process servers, open-loop load at 1000 calls a second, 0.5s healthy,
// then the fault on one of them for 2s (on all three for 10s, overloaded),
// three times over (overloaded once) with the median of the runs reported. Of the
// calls due after the fault began it reports, per row and fault, latency
// percentiles (from the time each call was due), failures, the faulty
// instance's share of attempts, attempts per call, and how long after the
// fault the faulty instance got its last attempt. `make bench` turns them
// into a table with the targets' verdicts. Run with -benchtime 1x.
//
// The client, the three servers and the load generator share this process
// on 2 cores, so the harness runs with GOGC=400 and collects garbage before
// each cell: its own collections would otherwise add pauses of several
// milliseconds to every row's tail alike.
func BenchmarkGrayFailure(b *testing.B) {
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	slowBy := 10 * healthyMedian(b)
	charts := newLatencyCharts("gray", 100*time.Millisecond)
	for _, row := range append(grayRows(), nativeGrayRows(b)...) {
		for f := range fault(len(faultNames)) {
			prefix := row.name + "/" + faultNames[f] + "/"
			for unit, v := range grayCell(b, row, f, slowBy, charts) {
				b.ReportMetric(v, prefix+unit)
			}
		}
	}
	charts.write(b)
	b.ReportMetric(ms(slowBy), "slow_adds_ms")
	b.ReportMetric(ms(hedgeFor), "hedge_after_ms")
	b.ReportMetric(ms(defaults.RetryTimeout/defaults.MaxAttempts), "attempt_share_ms")
}

// healthyMedian is the median latency of a healthy round-robin stack under
// the same load.
func healthyMedian(b *testing.B) time.Duration {
	var servers []*faultyServer
	var addrs []string
	for i := range 3 {
		s := startFaulty(b, fmt.Sprintf("trim-%d", i), 0)
		servers = append(servers, s)
		addrs = append(addrs, s.addr)
	}
	e, closeRow := trimkitRow(client.CallConfig{})(addrs, &attemptLog{})
	defer closeRow()
	calls, _ := loadgen.Start(context.Background(), e, benchInput, loadgen.Options{Rate: grayRate, Duration: time.Second}).Wait()
	s, _ := loadgen.Summarize(calls, 0)
	for _, srv := range servers {
		srv.stop()
	}
	return time.Duration(s.P50ms * float64(time.Millisecond))
}

// grayCell runs a cell grayReps times (overloaded once) and sums it up:
// the median of the runs' latency percentiles, the largest max and the
// latest last attempt to the faulty instance (never, if it never stopped in
// any run), and failures, share and attempts over all runs.
func grayCell(b *testing.B, row grayRow, f fault, slowBy time.Duration, charts *latencyCharts) map[string]float64 {
	reps := grayReps
	if f == overloaded {
		reps = 1
	}
	var runs []grayResult
	for i := range reps {
		r := grayRunOnce(b, row, f, slowBy)
		if i == 0 {
			charts.add(faultNames[f], row.name, r.calls, r.faultAt)
		}
		r.calls = nil
		runs = append(runs, r)
	}
	med := func(get func(grayResult) float64) float64 {
		vs := make([]float64, 0, len(runs))
		for _, r := range runs {
			vs = append(vs, get(r))
		}
		slices.Sort(vs)
		return vs[len(vs)/2]
	}
	out := map[string]float64{
		"p50_ms":  med(func(r grayResult) float64 { return r.s.P50ms }),
		"p99_ms":  med(func(r grayResult) float64 { return r.s.P99ms }),
		"p999_ms": med(func(r grayResult) float64 { return r.s.P999ms }),
		"runs":    float64(reps),
	}
	var calls, failures, total, toFaulty, maxMs, stopped float64
	for _, r := range runs {
		calls += float64(r.s.Requests)
		failures += float64(r.s.Failures)
		total += float64(r.total)
		toFaulty += float64(r.toFaulty)
		maxMs = max(maxMs, r.s.MaxMs)
		if r.stoppedAfter < 0 || stopped < 0 {
			stopped = -1
		} else {
			stopped = max(stopped, r.stoppedAfter)
		}
	}
	out["max_ms"], out["failures"], out["calls"] = maxMs, failures, calls
	out["faulty_share"] = toFaulty / max(total, 1)
	out["attempts_call"] = total / max(calls, 1)
	out["stopped_after_ms"] = stopped
	return out
}

// grayResult is one run of a cell.
type grayResult struct {
	s               loadgen.Summary
	total, toFaulty int64
	stoppedAfter    float64 // ms; -1: it never stopped getting attempts
	// calls are all the run's, warm-up included, and faultAt when the
	// fault began: for the charts.
	calls   []loadgen.Call
	faultAt time.Time
}

func grayRunOnce(b testing.TB, row grayRow, f fault, slowBy time.Duration) grayResult {
	runtime.GC()
	var servers []*faultyServer
	var addrs []string
	for i := range 3 {
		s := startFaulty(b, fmt.Sprintf("trim-%d", i), slowBy)
		servers = append(servers, s)
		addrs = append(addrs, s.addr)
	}
	run := grayRun
	if f == overloaded {
		run = overloadRun
	}
	al := &attemptLog{faulty: addrs[0]}
	e, closeRow := row.build(addrs, al)
	defer closeRow()
	defer func() {
		for _, s := range servers {
			s.stop()
		}
	}()
	load := loadgen.Start(context.Background(), e, benchInput, loadgen.Options{Rate: grayRate, Duration: grayWarm + run})
	time.Sleep(grayWarm)
	beforeTotal, beforeFaulty := al.total.Load(), al.toFaulty.Load()
	faultAt := time.Now()
	switch f {
	case overloaded:
		for _, s := range servers {
			s.set(f)
		}
	case healthy:
	default:
		servers[0].set(f)
	}
	calls, _ := load.Wait()
	s, _ := loadgen.Summarize(callsSince(calls, faultAt), 0)
	r := grayResult{s: s, total: al.total.Load() - beforeTotal, toFaulty: al.toFaulty.Load() - beforeFaulty, stoppedAfter: -1,
		calls: calls, faultAt: faultAt}
	if last := time.Unix(0, al.last.Load()); last.Before(faultAt.Add(run - time.Second)) {
		r.stoppedAfter = ms(max(0, last.Sub(faultAt)))
	}
	return r
}

// nativeGrayRows are the gRPC-native face's rows: a ClientConn from
// client.NewConn, round robin and p2c, each run's servers registered in a
// Consul dev agent (no checks: passing at once, as the other rows' fixed
// instances are) under a service of their own. Attempts are counted by a
// stats handler, one per attempt that reached an instance's connection,
// as grpc-lr counts the calls that did.
func nativeGrayRows(b *testing.B) []grayRow {
	agent := testenv.Consul(b)
	c := agent.API()
	var services int
	conn := func(cfg client.CallConfig) func([]string, *attemptLog) (endpoint.Endpoint, func()) {
		return func(addrs []string, al *attemptLog) (endpoint.Endpoint, func()) {
			services++
			service := fmt.Sprintf("gray-%d", services)
			var ids []string
			for i, a := range addrs {
				id := fmt.Sprintf("%s-%d", service, i)
				if err := registerService(c, service, id, a, false); err != nil {
					b.Fatal(err)
				}
				ids = append(ids, id)
			}
			agent.WaitPassing(service, ids...)
			conn, err := client.NewConn(client.Config{Consul: sd.ConsulConfig{Address: agent.HTTPAddr}, Service: service, CallConfig: cfg},
				client.WithDialOptions(grpc.WithStatsHandler(attemptStats{al})))
			if err != nil {
				b.Fatal(err)
			}
			// Discovery answered and a connection up, as the fixed rows'
			// are from the start.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for s := conn.GetState(); s != connectivity.Ready; s = conn.GetState() {
				if !conn.WaitForStateChange(ctx, s) {
					b.Fatalf("%s: ClientConn still %v", service, s)
				}
			}
			return trim.Endpoints(conn), func() {
				conn.Close()
				for _, id := range ids {
					_ = c.Agent().ServiceDeregister(id)
				}
			}
		}
	}
	return []grayRow{
		{"conn-rr", conn(client.CallConfig{})},
		{"conn-p2c", conn(client.CallConfig{Balancer: client.P2CName})},
	}
}

// attemptStats counts in an attemptLog every trim call that grpc starts
// on an instance's connection: each of Retry's attempts, hedges included.
type attemptStats struct{ al *attemptLog }

func (s attemptStats) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (s attemptStats) HandleRPC(_ context.Context, st stats.RPCStats) {
	if h, ok := st.(*stats.OutHeader); ok && h.Client && h.FullMethod == pb.Trim_TrimSpace_FullMethodName && h.RemoteAddr != nil {
		s.al.count(h.RemoteAddr.String())
	}
}

func (s attemptStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (s attemptStats) HandleConn(context.Context, stats.ConnStats) {}

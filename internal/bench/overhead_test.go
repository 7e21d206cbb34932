package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"
	kitgrpc "github.com/go-kit/kit/transport/grpc"
	"github.com/go-kit/log"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/defaults"
	"github.com/trimkit/trimkit/internal/paired"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/internal/tlsfiles"
	"github.com/trimkit/trimkit/pb"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

const benchInput = "  hello,\ttrim kit  "

// caller makes one call; rows of the overhead benchmark build one each.
type caller func(ctx context.Context) error

func dial(tb testing.TB, addr string) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

func rawOneConn(tb testing.TB, addrs []string) caller {
	stub := pb.NewTrimClient(dial(tb, addrs[0]))
	return func(ctx context.Context) error {
		_, err := stub.TrimSpace(ctx, &pb.TrimRequest{S: benchInput})
		return err
	}
}

func rawThreeConn(tb testing.TB, addrs []string) caller {
	next := stubsInTurn(tb, addrs)
	return func(ctx context.Context) error {
		_, err := next().TrimSpace(ctx, &pb.TrimRequest{S: benchInput})
		return err
	}
}

// stubsInTurn dials each of addrs and returns the generated stubs, one
// after the other in turn: raw round robin.
func stubsInTurn(tb testing.TB, addrs []string) func() pb.TrimClient {
	var stubs []pb.TrimClient
	for _, a := range addrs {
		stubs = append(stubs, pb.NewTrimClient(dial(tb, a)))
	}
	var n atomic.Uint64
	return func() pb.TrimClient { return stubs[n.Add(1)%uint64(len(stubs))] }
}

// rawThreeConnHeader is raw-3conn reading the trimsvc-instance header of
// every answer, as the trim binding does (grpc.Header): not a row the
// targets name, but the price of that read, which trimkit-fixed pays and
// raw-3conn does not.
func rawThreeConnHeader(tb testing.TB, addrs []string) caller {
	next := stubsInTurn(tb, addrs)
	return func(ctx context.Context) error {
		var header metadata.MD
		_, err := next().TrimSpace(ctx, &pb.TrimRequest{S: benchInput}, grpc.Header(&header))
		if err == nil && len(header.Get(trim.InstanceHeader)) == 0 {
			return errors.New("no trimsvc-instance header")
		}
		return err
	}
}

// rawThreeConnDeadline is raw-3conn with a context deadline on every call:
// not a row the targets name, but the price of a deadline on the wire, which
// is why Retry enforces its per-attempt share with a timer instead.
func rawThreeConnDeadline(tb testing.TB, addrs []string) caller {
	call := rawThreeConn(tb, addrs)
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, defaults.RetryTimeout/defaults.MaxAttempts)
		defer cancel()
		return call(ctx)
	}
}

// gokitStock is the stack as the go-kit examples (addsvc, profilesvc)
// build it: go-kit's transport/grpc Client per instance, sd.NewEndpointer,
// lb.NewRoundRobin and lb.Retry. Like the examples, it does not read the
// trimsvc-instance header, which trimkit's rows do.
func gokitStock(tb testing.TB, addrs []string) caller {
	endpointer := kitsd.NewEndpointer(kitsd.FixedInstancer(addrs), gokitFactory, log.NewNopLogger())
	tb.Cleanup(endpointer.Close)
	e := lb.Retry(3, 500*time.Millisecond, lb.NewRoundRobin(endpointer))
	return endpointCaller(e)
}

// gokitFactory is the examples' sd.Factory: a connection per instance and
// go-kit's transport/grpc Client over it.
func gokitFactory(instance string) (endpoint.Endpoint, io.Closer, error) {
	conn, err := grpc.NewClient(instance, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, err
	}
	return kitgrpc.NewClient(conn, "pb.Trim", "TrimSpace", encodeGRPCTrimRequest, decodeGRPCTrimResponse, pb.TrimResponse{}).Endpoint(), conn, nil
}

func encodeGRPCTrimRequest(_ context.Context, request interface{}) (interface{}, error) {
	return &pb.TrimRequest{S: request.(trimsvc.TrimRequest).S}, nil
}

func decodeGRPCTrimResponse(_ context.Context, reply interface{}) (interface{}, error) {
	return trim.TrimResponse{TrimResponse: trimsvc.TrimResponse{S: reply.(*pb.TrimResponse).GetS()}}, nil
}

func trimkitFixed(tb testing.TB, addrs []string) caller {
	c, err := trim.NewClientFromInstancer(kitsd.FixedInstancer(addrs), client.CallConfig{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return endpointCaller(c.Endpoint())
}

// trimkitTraced is trimkit-fixed with tracing on: an SDK TracerProvider
// whose batches go nowhere, so that the row measures making the spans
// (the call's, its attempt's, otelgrpc's client span) and not an export.
func trimkitTraced(tb testing.TB, addrs []string) caller {
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	tb.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	c, err := trim.NewClientFromInstancer(kitsd.FixedInstancer(addrs), client.CallConfig{Retry: client.RetryConfig{TracerProvider: tp}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return endpointCaller(c.Endpoint())
}

func trimkitConsul(tb testing.TB, addrs []string) caller {
	agent := consulWith(tb, addrs)
	cl, err := trim.NewClient(client.Config{Consul: sd.ConsulConfig{Address: agent.HTTPAddr}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cl.Close() })
	return endpointCaller(cl.Endpoint())
}

// consulWith starts a Consul dev agent with addrs registered as instances
// of trimsvc, and waits until it serves them.
func consulWith(tb testing.TB, addrs []string) *testenv.Agent {
	agent := testenv.Consul(tb)
	c := agent.API()
	var ids []string
	for i, a := range addrs {
		id := fmt.Sprintf("trim-%d", i)
		ids = append(ids, id)
		// No check: passing at once. Checks are exercised with real
		// processes in the lifecycle tests and BenchmarkFailover.
		register(tb, c, id, a, false)
	}
	agent.WaitPassing("trimsvc", ids...)
	return agent
}

// trimkitConn is the gRPC-native face: the generated client over the one
// ClientConn client.NewConn makes, discovering the 3 instances through a
// real Consul dev agent as trimkit-consul does; unary calls go through
// Retry, as an interceptor.
func trimkitConn(tb testing.TB, addrs []string) caller {
	agent := consulWith(tb, addrs)
	conn, err := client.NewConn(client.Config{Consul: sd.ConsulConfig{Address: agent.HTTPAddr}, Service: "trimsvc"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return stubCaller(pb.NewTrimClient(conn))
}

// roundRobinConfig is grpc-go's own round robin, as a service config.
const roundRobinConfig = `{"loadBalancingConfig":[{"round_robin":{}}]}`

// rawOneConnRR is the floor for trimkit-conn: one plain grpc.ClientConn
// over the 3 addresses (grpc-go's manual resolver) with grpc-go's
// round_robin, no interceptor.
func rawOneConnRR(tb testing.TB, addrs []string) caller {
	return stubCaller(pb.NewTrimClient(roundRobinConn(tb, addrs)))
}

// roundRobinConn is one plain grpc.ClientConn over addrs with grpc-go's
// round_robin, closed when tb ends.
func roundRobinConn(tb testing.TB, addrs []string) *grpc.ClientConn {
	tb.Helper()
	conn, err := manualConn(addrs, roundRobinConfig)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// manualConn is one plain grpc.ClientConn over addrs (grpc's manual
// resolver) with serviceConfig and opts, in plaintext.
func manualConn(addrs []string, serviceConfig string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	r := manual.NewBuilderWithScheme("bench")
	var state resolver.State
	for _, a := range addrs {
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a})
	}
	r.InitialState(state)
	return grpc.NewClient(r.Scheme()+":///trim", append([]grpc.DialOption{grpc.WithResolvers(r),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(serviceConfig)}, opts...)...)
}

// stubCaller calls TrimSpace on stub, as the raw rows do.
func stubCaller(stub pb.TrimClient) caller {
	return func(ctx context.Context) error {
		_, err := stub.TrimSpace(ctx, &pb.TrimRequest{S: benchInput})
		return err
	}
}

// rawThreeConnMTLS is raw-3conn over mutual TLS, to servers of its own.
func rawThreeConnMTLS(tb testing.TB, _ []string) caller {
	m := startMTLSServers(tb, 3)
	certs, err := tlsfiles.LoadCerts(m.callerCert, m.callerKey, m.caFile)
	if err != nil {
		tb.Fatal(err)
	}
	var stubs []pb.TrimClient
	for _, a := range m.servers {
		conn, err := grpc.NewClient(a, grpc.WithTransportCredentials(tlsfiles.ClientCreds(certs, "")))
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { conn.Close() })
		stubs = append(stubs, pb.NewTrimClient(conn))
	}
	var n atomic.Uint64
	return func(ctx context.Context) error {
		_, err := stubs[n.Add(1)%uint64(len(stubs))].TrimSpace(ctx, &pb.TrimRequest{S: benchInput})
		return err
	}
}

// trimkitMTLS is trimkit-fixed over mutual TLS, to servers of its own.
func trimkitMTLS(tb testing.TB, _ []string) caller {
	m := startMTLSServers(tb, 3)
	c, err := trim.NewClientFromInstancer(kitsd.FixedInstancer(m.servers), client.CallConfig{TLS: client.TLS{CAFile: m.caFile, CertFile: m.callerCert, KeyFile: m.callerKey}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return endpointCaller(c.Endpoint())
}

func endpointCaller(e endpoint.Endpoint) caller {
	req := trimsvc.TrimRequest{S: benchInput}
	return func(ctx context.Context) error {
		resp, err := e(ctx, req)
		if err != nil {
			return err
		}
		return resp.(trim.TrimResponse).Err
	}
}

type overheadRow struct {
	name  string
	build func(testing.TB, []string) caller
}

// overheadRows are the stacks compared, named as `make bench` prints them.
func overheadRows() []overheadRow {
	return []overheadRow{
		{"raw-1conn", rawOneConn},
		{"raw-3conn", rawThreeConn},
		// The same stack again, on connections of its own: how far apart
		// two identical rows come out, the floor under every ratio.
		{"raw-3conn-again", rawThreeConn},
		{"raw-3conn-deadline", rawThreeConnDeadline},
		{"raw-3conn-header", rawThreeConnHeader},
		{"gokit-stock", gokitStock},
		{"trimkit-fixed", trimkitFixed},
		{"trimkit-traced", trimkitTraced},
		{"trimkit-consul", trimkitConsul},
		{"raw-3conn-mtls", rawThreeConnMTLS},
		{"trimkit-mtls", trimkitMTLS},
		{"raw-3conn-orders", rawThreeConnOrders},
		{"generic-orders", genericFixedOrders},
		{"raw-1conn-rr", rawOneConnRR},
		{"trimkit-conn", trimkitConn},
	}
}

// BenchmarkOverhead measures one TrimSpace call through each stack over
// three in-process servers on loopback, sequentially and in parallel. The
// row names are what `make bench` compares with raw-3conn.
func BenchmarkOverhead(b *testing.B) {
	addrs := startServers(b, 3)
	rows := overheadRows()
	for _, mode := range []string{"seq", "par"} {
		for _, row := range rows {
			b.Run(mode+"/"+row.name, func(b *testing.B) {
				call := row.build(b, addrs)
				ctx := context.Background()
				for range 100 { // connections up, discovery settled
					if err := call(ctx); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportAllocs()
				b.ResetTimer()
				if mode == "seq" {
					for b.Loop() {
						if err := call(ctx); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := call(ctx); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

// BenchmarkOverheadInterleaved measures the same rows as BenchmarkOverhead
// in interleaved rounds (every row runs a block of calls in each round), so
// drift in the machine's speed over the run, which on a 2-core machine is
// larger than the differences measured, hits every row alike; each round
// starts at another row, and each block after a collection. It reports
// each row's wall time per call as a metric "<mode>/<row>-ns/op", from
// which `make bench` computes the ratios, and the process's CPU time per
// call (its in-process servers' included) as "<mode>/<row>-cpu-ns/op".
// Run with -benchtime 1x.
//
// TRIMKIT_OVERHEAD_ROWS (comma-separated row names) narrows it to those
// rows, and TRIMKIT_OVERHEAD_ROUNDS sets the rounds (20): fewer rows in
// more rounds measure a ratio more closely.
func BenchmarkOverheadInterleaved(b *testing.B) {
	const block = 1000
	rounds := envCount(b, "TRIMKIT_OVERHEAD_ROUNDS", 20, 1)
	addrs := startServers(b, 3)
	rows := overheadRows()
	if v := os.Getenv("TRIMKIT_OVERHEAD_ROWS"); v != "" {
		var some []overheadRow
		for _, name := range strings.Split(v, ",") {
			i := slices.IndexFunc(rows, func(r overheadRow) bool { return r.name == name })
			if i < 0 {
				b.Fatalf("TRIMKIT_OVERHEAD_ROWS: no row %q", name)
			}
			some = append(some, rows[i])
		}
		rows = some
	}
	callers := make([]caller, len(rows))
	ctx := context.Background()
	for i, row := range rows {
		callers[i] = row.build(b, addrs)
		for range 100 {
			if err := callers[i](ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	workers := runtime.GOMAXPROCS(0)
	for _, mode := range []string{"seq", "par"} {
		total := make([]time.Duration, len(rows))
		cpu := make([]time.Duration, len(rows))
		for round := range rounds {
			// Each round starts at another row, and each block on a
			// collected heap: a row does not pay for the garbage of the
			// row before it, nor always follow the same one.
			for k := range callers {
				i := (round + k) % len(callers)
				call := callers[i]
				runtime.GC()
				cpuStart := processCPU(b)
				start := time.Now()
				if mode == "seq" {
					for range block {
						if err := call(ctx); err != nil {
							b.Fatal(err)
						}
					}
				} else {
					var wg sync.WaitGroup
					for range workers {
						wg.Add(1)
						go func() {
							defer wg.Done()
							for range block / workers {
								if err := call(ctx); err != nil {
									b.Error(err)
									return
								}
							}
						}()
					}
					wg.Wait()
				}
				total[i] += time.Since(start)
				cpu[i] += processCPU(b) - cpuStart
			}
		}
		for i, row := range rows {
			b.ReportMetric(float64(total[i].Nanoseconds())/float64(rounds*block), mode+"/"+row.name+"-ns/op")
			b.ReportMetric(float64(cpu[i].Nanoseconds())/float64(rounds*block), mode+"/"+row.name+"-cpu-ns/op")
		}
	}
}

// processCPU is the CPU time the process has used, user and system, its
// in-process servers' included: what a block of calls costs the machine,
// which the wall clock of a shared 2-core machine measures less steadily.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCallPath is trimkit's own work per call, with no network: the
// go-kit face's stack (Endpointer, RoundRobin, Retry) over 3 instances
// whose endpoint returns at once. What it costs is the part of the
// overhead rows' difference that trimkit's code spends itself; the rest
// is what that work does to the calls around it (caches, scheduling).
func BenchmarkCallPath(b *testing.B) {
	answer := func(_ context.Context, request any) (any, error) { return request, nil }
	factory := func(string) (endpoint.Endpoint, io.Closer, error) { return answer, nil, nil }
	endpointer, err := client.NewEndpointer(kitsd.FixedInstancer{"10.0.0.1:8975", "10.0.0.2:8975", "10.0.0.3:8975"}, factory, log.NewNopLogger(), client.EndpointerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { endpointer.Close() })
	e, err := client.Retry(client.NewRoundRobin(endpointer), client.RetryConfig{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	req := trimsvc.TrimRequest{S: benchInput}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// overheadPairs are the rows BenchmarkOverheadPaired measures, each
// against its floor: the targets of issues #30 and #31; the floor's own
// twin, which says how far two identical stacks land apart; and what the
// trim binding's header read costs, alone and under trimkit-fixed.
var overheadPairs = []struct{ row, floor string }{
	{"raw-3conn-again", "raw-3conn"},
	{"raw-3conn-header", "raw-3conn"},
	{"trimkit-fixed", "raw-3conn"},
	{"trimkit-fixed", "raw-3conn-header"},
	{"generic-orders", "raw-3conn-orders"},
	{"trimkit-mtls", "raw-3conn-mtls"},
	{"trimkit-conn", "raw-1conn-rr"},
}

// BenchmarkOverheadPaired measures each row of overheadPairs against its
// floor in alternating blocks of 100 calls, 400 pairs of blocks
// (TRIMKIT_OVERHEAD_PAIRS), each pair started by the other row in turn,
// and reports the median of the pairs' ratios with its 95% confidence
// interval (by order statistics, no assumption about the spread). A
// 2-core virtual machine's speed drifts by 10-20% over seconds; two blocks
// a few milliseconds apart see the same machine, so the drift cancels in
// each pair, where BenchmarkOverheadInterleaved's blocks of 1,000 calls
// per row still feel it. The ratio is time per call, row over floor.
func BenchmarkOverheadPaired(b *testing.B) {
	pairs := envCount(b, "TRIMKIT_OVERHEAD_PAIRS", 400, 20)
	addrs := startServers(b, 3)
	builders := map[string]func(testing.TB, []string) caller{}
	for _, r := range overheadRows() {
		builders[r.name] = r.build
	}
	callers := map[string]caller{}
	callerOf := func(name string) caller {
		c, ok := callers[name]
		if !ok {
			c = builders[name](b, addrs)
			for range 200 {
				if err := c(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
			callers[name] = c
		}
		return c
	}
	for _, p := range overheadPairs {
		row, floor := callerOf(p.row), callerOf(p.floor)
		for _, mode := range []string{"seq", "par"} {
			ratios := pairedRatios(b, mode, floor, row, pairs)
			lo, mid, hi := paired.MedianInterval(ratios)
			name := mode + "/" + p.row + "/" + p.floor
			b.ReportMetric(mid, name+"-ratio")
			b.ReportMetric(lo, name+"-ratio-lo")
			b.ReportMetric(hi, name+"-ratio-hi")
		}
	}
}

// pairedRatios times pairs of blocks of 100 calls, floor's and row's in
// turn, and returns each pair's ratio, row over floor.
func pairedRatios(b *testing.B, mode string, floor, row caller, pairs int) []float64 {
	const block = 100
	workers := runtime.GOMAXPROCS(0)
	ctx := context.Background()
	run := func(call caller) time.Duration {
		start := time.Now()
		if mode == "seq" {
			for range block {
				if err := call(ctx); err != nil {
					b.Fatal(err)
				}
			}
			return time.Since(start)
		}
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for range block / workers {
					if err := call(ctx); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}
	runtime.GC()
	return paired.Ratios(pairs, func() time.Duration { return run(floor) }, func() time.Duration { return run(row) })
}

// envCount is the count the environment variable name sets, def when it
// is unset; anything but a whole number of at least `least` fails tb.
func envCount(tb testing.TB, name string, def, least int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < least {
		tb.Fatalf("%s=%q: want a whole number, at least %d", name, v, least)
	}
	return n
}

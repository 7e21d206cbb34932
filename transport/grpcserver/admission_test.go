package grpcserver

import (
	"context"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/kit/metrics/generic"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trimkit/trimkit/internal/overload"
)

// recordingLimit is a fixed limit that records what it observes.
type recordingLimit struct {
	ConcurrencyLimit
	mu       sync.Mutex
	observed []int // in flight, per observed call
}

func (r *recordingLimit) Observe(latency time.Duration, inflight int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.observed = append(r.observed, inflight)
}

func (r *recordingLimit) calls() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.observed...)
}

func TestShedCallsAreMarkedAndCountedAndAnswersCarryTheLoad(t *testing.T) {
	release := make(chan struct{})
	defer close(release) // a test that stops early lets its handlers go
	entered := make(chan struct{}, 8)
	limit := &recordingLimit{ConcurrencyLimit: FixedLimit(2)}
	shed, limitGauge, inflight := generic.NewCounter("shed"), generic.NewGauge("limit"), generic.NewGauge("inflight")
	reader := sdkmetric.NewManualReader() // and through OpenTelemetry, beside go-kit's
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	m := AdmissionMetrics{Shed: shed, Limit: limitGauge, InFlight: inflight, MeterProvider: mp}
	conn, _, _ := serve(t, Limits{Concurrency: limit, Metrics: m}, func(ctx context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
		entered <- struct{}{}
		<-release
		return in, nil
	})
	ctx := context.Background()
	type answer struct {
		err     error
		trailer metadata.MD
	}
	answers := make(chan answer, 2)
	for range 2 {
		go func() {
			var md metadata.MD
			asks := metadata.NewOutgoingContext(ctx, overload.Request) // as a load-aware balancer's calls do
			err := conn.Invoke(asks, "/test.Echo/Echo", wrapperspb.Bytes(nil), new(wrapperspb.BytesValue), grpc.Trailer(&md))
			answers <- answer{err, md}
		}()
	}
	<-entered
	<-entered
	if inflight.Value() != 2 || limitGauge.Value() != 2 {
		t.Errorf("gauges while full: in flight %v, limit %v; want 2, 2", inflight.Value(), limitGauge.Value())
	}
	err := echo(ctx, conn, nil)
	if status.Code(err) != codes.ResourceExhausted || !overload.IsShed(err) {
		t.Errorf("a call over the limit: %v; want ResourceExhausted marked as shed", err)
	}
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("a health check while full: %v", err)
	}
	if shed.Value() != 1 {
		t.Errorf("shed counter = %v, want 1", shed.Value())
	}
	// One call ends, then the other: each answer's load is read when its
	// call ends.
	var loads []overload.Report
	for range 2 {
		release <- struct{}{}
		a := <-answers
		if a.err != nil {
			t.Fatal(a.err)
		}
		r, ok := overload.FromTrailer(a.trailer)
		if !ok {
			t.Fatalf("an answer without its load: trailer %v", a.trailer)
		}
		loads = append(loads, r)
	}
	// The first to end leaves one call in flight of 2, the second none.
	if loads[0].Limit != 2 || loads[1].Limit != 2 || loads[0].Utilization != 0.5 || loads[1].Utilization != 0 {
		t.Errorf("loads in the answers: %+v; want utilizations 0.5 and 0 of limit 2", loads)
	}
	if got := limit.calls(); len(got) != 2 || got[0]+got[1] != 3 {
		t.Errorf("observed calls (in flight at admission) = %v, want 1 and 2", got)
	}
	eventually(t, "the in-flight gauge back to 0", func() bool { return inflight.Value() == 0 })
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	otel := map[string]float64{}
	for _, sm := range rm.ScopeMetrics {
		for _, md := range sm.Metrics {
			switch d := md.Data.(type) {
			case metricdata.Sum[float64]:
				for _, p := range d.DataPoints {
					otel[md.Name] += p.Value
				}
			case metricdata.Gauge[float64]:
				for _, p := range d.DataPoints {
					otel[md.Name] = p.Value
				}
			}
		}
	}
	if otel["trimkit.server.shed"] != 1 || otel["trimkit.server.concurrency_limit"] != 2 || otel["trimkit.server.in_flight"] != 0 {
		t.Errorf("through OpenTelemetry: %v; want 1 shed, a limit of 2, none in flight", otel)
	}
	// A message over MaxRecvMsgSize is ResourceExhausted too, not shed.
	if err := echo(ctx, conn, make([]byte, 5<<20)); status.Code(err) != codes.ResourceExhausted || overload.IsShed(err) {
		t.Errorf("a message too large: %v; want ResourceExhausted not marked as shed", err)
	}
}

// The load goes only to a caller that asks for it (as trimkit's
// load-aware balancers do), and to none with OmitLoad: a caller that reads
// no load costs the server no trailer.
func TestLoadOnlyToCallersThatAsk(t *testing.T) {
	echoed := func(ctx context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) { return in, nil }
	for _, c := range []struct {
		name      string
		omit, ask bool
		want      bool
	}{
		{"asked", false, true, true},
		{"not asked", false, false, false},
		{"asked, OmitLoad", true, true, false},
	} {
		conn, _, _ := serve(t, Limits{Concurrency: FixedLimit(4), OmitLoad: c.omit}, echoed)
		ctx := context.Background()
		if c.ask {
			ctx = metadata.NewOutgoingContext(ctx, metadata.Pairs(overload.RequestKey, "bin")) // the value's case does not matter
		}
		var md metadata.MD
		if err := conn.Invoke(ctx, "/test.Echo/Echo", wrapperspb.Bytes(nil), new(wrapperspb.BytesValue), grpc.Trailer(&md)); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if _, have := overload.FromTrailer(md); have != c.want {
			t.Errorf("%s: load in the trailer %v, want %v (trailer %v)", c.name, have, c.want, md)
		}
	}
}

func TestNoWorkForACallerThatHasGone(t *testing.T) {
	ran := make(chan struct{}, 1)
	limit := &recordingLimit{ConcurrencyLimit: FixedLimit(10)}
	_, a := Limits{Concurrency: limit, OmitLoad: true}.serverOptions()
	handler := func(ctx context.Context, req any) (any, error) { ran <- struct{}{}; return req, nil }
	// A call admitted, whose caller has gone before its handler starts.
	ctx, cancel := context.WithCancel(context.Background())
	tctx, err := a.tap(ctx, &tap.Info{FullMethodName: "/test.Echo/Echo"})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := a.unary(tctx, "req", nil, handler); status.Code(err) != codes.Canceled {
		t.Errorf("a call whose caller has gone: %v; want Canceled", err)
	}
	if len(ran) != 0 {
		t.Error("its handler ran")
	}
	if a.inflight.Load() != 0 || len(limit.calls()) != 0 {
		t.Errorf("in flight %d, observed %v: want its place given back, and nothing observed", a.inflight.Load(), limit.calls())
	}
}

func TestAnswersCarryTheServicesUtilizationWhenHigher(t *testing.T) {
	for _, c := range []struct {
		name        string
		utilization float64
		want        float64
	}{
		{"busier than its calls in flight say", 0.7, 0.7},
		{"idler: in flight over the limit wins", 0, 0},
		{"over 1 reads as full", 3, 1},
		{"NaN is ignored", math.NaN(), 0},
	} {
		_, a := Limits{Concurrency: FixedLimit(4), Utilization: func() float64 { return c.utilization }}.serverOptions()
		ctx, err := a.tap(context.Background(), &tap.Info{FullMethodName: "/test.Echo/Echo", Header: overload.Request})
		if err != nil {
			t.Fatal(err)
		}
		tk, err := begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		r, ok := overload.FromTrailer(tk.end(ctx, true))
		if !ok || r.Utilization != c.want || r.Limit != 4 {
			t.Errorf("%s: load %+v (%v), want utilization %v of limit 4", c.name, r, ok, c.want)
		}
	}
}

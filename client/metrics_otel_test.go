package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/grpc/codes"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/trimsvc"
)

// With a MeterProvider, the stack's metrics report through OpenTelemetry,
// labels as attributes, beside the go-kit instruments set with it.
func TestMetricsThroughOpenTelemetry(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	kit := &loadgen.Counter{}
	m := client.Metrics{MeterProvider: mp, Attempts: kit}

	f := newFakes(map[string]endpoint.Endpoint{"otel-a:1": ok("a"), "otel-b:1": failing(codes.Unavailable), "otel-c:1": ok("c")})
	e, err := client.NewEndpointer(kitsd.FixedInstancer{"otel-a:1", "otel-b:1", "otel-c:1"}, f.factory, log.NewNopLogger(),
		client.EndpointerConfig{Metrics: m, Ejection: client.Ejection{ConsecutiveFailures: 3, BaseTime: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	call, err := client.Retry(client.NewRoundRobin(e), client.RetryConfig{MaxAttempts: 3, Timeout: time.Second, Budget: noBudget, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	const calls = 30
	for range calls {
		if _, err := call(context.Background(), trimsvc.TrimRequest{S: "x"}); err != nil {
			t.Fatal(err)
		}
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]float64{} // instrument -> "instance outcome" -> value
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != "github.com/trimkit/trimkit/client" {
			continue
		}
		for _, md := range sm.Metrics {
			got[md.Name] = map[string]float64{}
			record := func(attrs attribute.Set, v float64) {
				inst, _ := attrs.Value("instance")
				out, _ := attrs.Value("outcome")
				got[md.Name][inst.AsString()+" "+out.AsString()] += v
			}
			switch d := md.Data.(type) {
			case metricdata.Sum[float64]:
				for _, p := range d.DataPoints {
					record(p.Attributes, p.Value)
				}
			case metricdata.Gauge[float64]:
				for _, p := range d.DataPoints {
					record(p.Attributes, p.Value)
				}
			}
		}
	}
	attempts := got["trimkit.client.attempts"]
	if attempts["otel-b:1 failed"] < 3 || attempts["otel-a:1 answered"]+attempts["otel-c:1 answered"] != calls {
		t.Errorf("trimkit.client.attempts: %v; want b's failures and the %d answers of a and c", attempts, calls)
	}
	var total float64
	for _, v := range attempts {
		total += v
	}
	if int64(total) != kit.Value() {
		t.Errorf("OpenTelemetry counted %v attempts, the go-kit counter beside it %d", total, kit.Value())
	}
	if got["trimkit.client.ejections"]["otel-b:1 "] != 1 {
		t.Errorf("trimkit.client.ejections: %v, want otel-b:1 once", got["trimkit.client.ejections"])
	}
	if got["trimkit.client.instances"][" "] != 3 {
		t.Errorf("trimkit.client.instances: %v, want 3", got["trimkit.client.instances"])
	}
	if got["trimkit.client.retries"][" "] < 3 {
		t.Errorf("trimkit.client.retries: %v, want the retries after b's failures", got["trimkit.client.retries"])
	}
}

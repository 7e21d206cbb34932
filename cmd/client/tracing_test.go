package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/trimkit/trimkit/internal/localjaeger"
	"github.com/trimkit/trimkit/internal/proc"
	"github.com/trimkit/trimkit/internal/testenv"
)

// otlpSpan is a span an OTLP receiver got, with the service that sent it.
type otlpSpan struct {
	service       string
	name          string
	trace, parent string
	id            string
	kind          tracepb.Span_SpanKind
	events        []string
}

// otlpReceiver is an OTLP/HTTP trace receiver (POST /v1/traces,
// protobuf) that keeps what it gets.
type otlpReceiver struct {
	*httptest.Server
	mu    sync.Mutex
	spans []otlpSpan
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		var export coltracepb.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(body, &export)
		}
		if req.URL.Path != "/v1/traces" || err != nil {
			http.Error(w, "want a protobuf ExportTraceServiceRequest at /v1/traces", http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		for _, rs := range export.GetResourceSpans() {
			service := ""
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.GetKey() == "service.name" {
					service = kv.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					var events []string
					for _, e := range s.GetEvents() {
						events = append(events, e.GetName())
					}
					r.spans = append(r.spans, otlpSpan{service: service, name: s.GetName(), kind: s.GetKind(), events: events,
						trace: hex.EncodeToString(s.GetTraceId()), id: hex.EncodeToString(s.GetSpanId()), parent: hex.EncodeToString(s.GetParentSpanId())})
				}
			}
		}
		r.mu.Unlock()
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = io.Copy(w, bytes.NewReader(out))
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *otlpReceiver) find(service, name string) []otlpSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	var found []otlpSpan
	for _, s := range r.spans {
		if s.service == service && s.name == name {
			found = append(found, s)
		}
	}
	return found
}

// tracedCall starts a trimsvc and runs the client once, both exporting
// their spans over OTLP/HTTP to endpoint, and returns the instance.
func tracedCall(t *testing.T, endpoint string) *proc.Trimsvc {
	t.Helper()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint) // the children inherit it
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100")        // ms: trimsvc sends its spans soon
	agent := testenv.Consul(t)
	in := testenv.StartTrimsvc(t, bins.Trimsvc(t), agent.HTTPAddr)
	agent.WaitPassing("trimsvc", in.ID)
	p, code := runClient(t, "-consul-addr", agent.HTTPAddr, " traced ")
	if code != 0 {
		t.Fatalf("client: exit %d:\n%s", code, p.Stdout())
	}
	return in
}

// With the standard OpenTelemetry environment, client and trimsvc export
// one trace per call over OTLP: the client's call, its attempt and its
// gRPC client span, and trimsvc's server span under that, in the same
// trace. trimsvc does not trace the agent's health checks, and its life
// is a span whose events are its lifecycle.
func TestCallIsOneTraceAcrossClientAndInstance(t *testing.T) {
	recv := newOTLPReceiver(t)
	in := tracedCall(t, recv.URL)
	calls := recv.find("client", "trimkit.call")
	attempts := recv.find("client", "trimkit.attempt")
	grpcClient := recv.find("client", "pb.Trim/TrimSpace")
	if len(calls) != 1 || len(attempts) != 1 || len(grpcClient) != 1 {
		t.Fatalf("the client's spans: %d calls, %d attempts, %d gRPC client spans; want one each", len(calls), len(attempts), len(grpcClient))
	}
	if attempts[0].parent != calls[0].id || grpcClient[0].parent != attempts[0].id || grpcClient[0].kind != tracepb.Span_SPAN_KIND_CLIENT {
		t.Errorf("the client's spans are not call > attempt > gRPC client: %+v %+v %+v", calls[0], attempts[0], grpcClient[0])
	}
	var server []otlpSpan
	for deadline := time.Now().Add(10 * time.Second); len(server) == 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		server = recv.find("trimsvc", "pb.Trim/TrimSpace")
	}
	if len(server) != 1 {
		t.Fatalf("trimsvc's server spans: want 1, have %d", len(server))
	}
	if s := server[0]; s.trace != calls[0].trace || s.parent != grpcClient[0].id || s.kind != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("trimsvc's span %+v does not continue the client's trace under its gRPC span %+v", s, grpcClient[0])
	}
	// Its health checks (every second here) are not traced.
	if err := in.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-in.Exited()
	if hc := recv.find("trimsvc", "grpc.health.v1.Health/Check"); len(hc) != 0 {
		t.Errorf("trimsvc traced %d health checks", len(hc))
	}
	life := recv.find("trimsvc", "trimsvc.instance")
	if len(life) != 1 {
		t.Fatalf("trimsvc's life: want 1 span, have %d", len(life))
	}
	want := []string{"registered in consul", "NOT_SERVING; deregistering", "deregistered from consul; draining", "drained; stopping gracefully"}
	var have []string
	for _, e := range life[0].events {
		if slices.Contains(want, e) {
			have = append(have, e)
		}
	}
	if !slices.Equal(have, want) {
		t.Errorf("trimsvc's lifecycle events: want %q in order, have %q (all: %q)", want, have, life[0].events)
	}
}

// The same trace, exported over OTLP to a real Jaeger and read back
// through its query API: the client's call, attempt and gRPC span, and
// trimsvc's server span, in one trace, each the child of the one before.
func TestTraceReadBackFromJaeger(t *testing.T) {
	j := testenv.Jaeger(t)
	tracedCall(t, "http://"+j.OTLPHTTP)
	var trace localjaeger.Trace
	chain := []struct{ service, operation string }{
		{"client", "trimkit.call"}, {"client", "trimkit.attempt"}, {"client", "pb.Trim/TrimSpace"}, {"trimsvc", "pb.Trim/TrimSpace"},
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		traces, err := j.Traces(ctx, "client", 20)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if len(traces) == 1 && len(traces[0].Spans) >= len(chain) {
			trace = traces[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Jaeger's traces of the client within 20s: %+v", traces)
		}
	}
	parent := ""
	for _, want := range chain {
		i := slices.IndexFunc(trace.Spans, func(s localjaeger.Span) bool {
			return s.Service == want.service && s.Operation == want.operation && s.Parent == parent
		})
		if i < 0 {
			t.Fatalf("no %s span %q under %q in Jaeger's trace %+v", want.service, want.operation, parent, trace)
		}
		parent = trace.Spans[i].ID
	}
}

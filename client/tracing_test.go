package client_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/proc"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/pb"
	"github.com/trimkit/trimkit/sd"
)

// A call whose instance is killed under it is one trace: the call's span,
// an attempt on the killed instance that was retried, and an attempt on
// another that answered, each with the gRPC client span of its call under
// it.
func TestTraceOfACallRetriedAfterItsInstanceWasKilled(t *testing.T) {
	agent := testenv.Consul(t)
	insts := []*proc.Trimsvc{
		testenv.StartTrimsvc(t, bins.Trimsvc(t), agent.HTTPAddr),
		testenv.StartTrimsvc(t, bins.Trimsvc(t), agent.HTTPAddr),
	}
	agent.WaitPassing("trimsvc", insts[0].ID, insts[1].ID)
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	c := newClient(t, client.Config{
		Consul: sd.ConsulConfig{Address: agent.HTTPAddr},
		// A share of the call's time long enough that the frozen
		// instance's attempt ends by its death, not its share.
		CallConfig: client.CallConfig{Retry: client.RetryConfig{Timeout: 20 * time.Second, TracerProvider: tp}},
	})
	waitInstances(t, c.Endpoint(), 2)

	// Freeze one instance, call until a call hangs on it, then kill it.
	victim := insts[0]
	if err := victim.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var answered string
	var err error
	for range 4 {
		done := make(chan struct{})
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		go func() {
			defer close(done)
			answered, err = c.TrimSpace(ctx, " x ")
		}()
		select {
		case <-done:
			cancel()
			continue // the other instance's: try again
		case <-time.After(300 * time.Millisecond):
		}
		if err := victim.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-done
		cancel()
		break
	}
	if err != nil || answered != "x" {
		t.Fatalf("the call on the killed instance: %q, %v", answered, err)
	}

	// The last call's trace.
	ended := spans.Ended()
	var call sdktrace.ReadOnlySpan
	for _, s := range ended {
		if s.Name() == "trimkit.call" {
			call = s
		}
	}
	if call == nil {
		t.Fatalf("no trimkit.call span among %d", len(ended))
	}
	var attempts []sdktrace.ReadOnlySpan
	for _, s := range ended {
		if s.Name() == "trimkit.attempt" && s.Parent().SpanID() == call.SpanContext().SpanID() {
			attempts = append(attempts, s)
		}
	}
	if len(attempts) != 2 {
		t.Fatalf("the call's attempts: want 2 spans, have %d", len(attempts))
	}
	first, second := attrs(attempts[0]), attrs(attempts[1])
	if first["trimkit.attempt"] != "1" || second["trimkit.attempt"] != "2" {
		t.Errorf("attempt numbers: %v, %v", first, second)
	}
	if first["trimkit.outcome"] != "retried" || second["trimkit.outcome"] != "ok" {
		t.Errorf("outcomes: first %q, second %q; want retried, ok", first["trimkit.outcome"], second["trimkit.outcome"])
	}
	if first["trimkit.instance.addr"] != victim.Addr || second["trimkit.instance.addr"] != insts[1].Addr {
		t.Errorf("instances: first %q, second %q; want %s then %s", first["trimkit.instance.addr"], second["trimkit.instance.addr"], victim.Addr, insts[1].Addr)
	}
	if first["trimkit.hedge"] != "false" {
		t.Errorf("the first attempt is no hedge: %v", first)
	}
	for _, a := range attempts {
		if a.SpanContext().TraceID() != call.SpanContext().TraceID() {
			t.Error("an attempt in another trace")
		}
		if grpcSpan := childOf(ended, a); grpcSpan == nil || grpcSpan.SpanKind() != trace.SpanKindClient {
			t.Errorf("attempt %s: no gRPC client span under it", attrs(a)["trimkit.attempt"])
		}
	}
}

// attrs are a span's attributes, as strings.
func attrs(s sdktrace.ReadOnlySpan) map[string]string {
	m := map[string]string{}
	for _, kv := range s.Attributes() {
		m[string(kv.Key)] = kv.Value.String()
	}
	return m
}

// childOf is the first span of spans whose parent is parent.
func childOf(spans []sdktrace.ReadOnlySpan, parent sdktrace.ReadOnlySpan) sdktrace.ReadOnlySpan {
	for _, s := range spans {
		if s.Parent().SpanID() == parent.SpanContext().SpanID() {
			return s
		}
	}
	return nil
}

// The native face traces as the go-kit face does: its calls through the
// generated client are a trimkit.call with its attempts, and each
// attempt's gRPC client span sits under the attempt.
func TestTraceOfACallThroughNewConn(t *testing.T) {
	agent := testenv.Consul(t)
	in := testenv.StartTrimsvc(t, bins.Trimsvc(t), agent.HTTPAddr)
	agent.WaitPassing("trimsvc", in.ID)
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	conn, err := client.NewConn(client.Config{
		Consul:     sd.ConsulConfig{Address: agent.HTTPAddr},
		Service:    "trimsvc",
		CallConfig: client.CallConfig{Retry: client.RetryConfig{TracerProvider: tp}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stub := pb.NewTrimClient(conn)
	// The first call may find the connection still connecting, and try
	// again: the call looked at is one made once it is up.
	if _, err := stub.TrimSpace(ctx, &pb.TrimRequest{S: " x "}, grpc.WaitForReady(true)); err != nil {
		t.Fatal(err)
	}
	before := len(spans.Ended())
	if _, err := stub.TrimSpace(ctx, &pb.TrimRequest{S: " x "}); err != nil {
		t.Fatal(err)
	}
	ended := spans.Ended()[before:]
	var call, attempt sdktrace.ReadOnlySpan
	for _, s := range ended {
		switch s.Name() {
		case "trimkit.call":
			call = s
		case "trimkit.attempt":
			attempt = s
		}
	}
	if call == nil || attempt == nil {
		t.Fatalf("want a trimkit.call and a trimkit.attempt among %d spans", len(ended))
	}
	if attempt.Parent().SpanID() != call.SpanContext().SpanID() {
		t.Error("the attempt is not the call's child")
	}
	if a := attrs(attempt); a["trimkit.outcome"] != "ok" || a["trimkit.instance.addr"] != in.Addr || a["trimkit.attempt"] != "1" {
		t.Errorf("the attempt's attributes: %v", a)
	}
	if s := childOf(ended, attempt); s == nil || s.SpanKind() != trace.SpanKindClient || s.Name() != "pb.Trim/TrimSpace" {
		t.Errorf("the attempt's gRPC client span: %v", s)
	}
}

package client

import (
	"context"
	"net"
	"testing"
	"time"

	kitsd "github.com/go-kit/kit/sd"
	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/trimkit/trimkit/internal/paired"
)

// answering is an interop TestService whose unary call answers at once.
type answering struct {
	testgrpc.UnimplementedTestServiceServer
}

func (answering) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{}, nil
}

// BenchmarkRetryCost is what Retry costs a call of a ClientConn, on the
// same connections: one ClientConn of NewConn's making over 3 in-process
// servers (a fixed Instancer, no Consul), its Retry turned off and on in
// alternating blocks of 100 sequential calls, 400 pairs; off, the
// interceptor calls grpc's invoker and trimkit's picker picks. It reports
// the median of the pairs' ratios, on over off, with its 95% interval
// (order statistics), and each side's time per call: the part of the
// native face's margin over raw-1conn-rr (BenchmarkOverheadPaired) that
// is Retry's.
func BenchmarkRetryCost(b *testing.B) {
	var addrs []string
	for range 3 {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv := grpc.NewServer()
		testgrpc.RegisterTestServiceServer(srv, answering{})
		go srv.Serve(lis)
		b.Cleanup(srv.Stop)
		addrs = append(addrs, lis.Addr().String())
	}
	p, err := callParts(CallConfig{})
	if err != nil {
		b.Fatal(err)
	}
	p.newBalancer = func(e *Endpointer) Balancer { return NewRoundRobin(e) }
	o, err := newOptions(nil)
	if err != nil {
		b.Fatal(err)
	}
	conn, setup, err := dialSetup("bench", kitsd.FixedInstancer(addrs), func() {}, p, o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	stub := testgrpc.NewTestServiceClient(conn)
	ctx := context.Background()
	call := func() {
		if _, err := stub.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
			b.Fatal(err)
		}
	}
	for range 300 {
		call()
	}
	r := setup.retry.Load()
	if r == nil {
		b.Fatal("the ClientConn has no Retry")
	}
	const block, pairs = 100, 400
	run := func(on bool) time.Duration {
		if on {
			setup.retry.Store(r)
		} else {
			setup.retry.Store(nil)
		}
		start := time.Now()
		for range block {
			call()
		}
		return time.Since(start)
	}
	var onSum, offSum time.Duration
	ratios := paired.Ratios(pairs,
		func() time.Duration { d := run(false); offSum += d; return d },
		func() time.Duration { d := run(true); onSum += d; return d })
	setup.retry.Store(r)
	lo, mid, hi := paired.MedianInterval(ratios)
	b.ReportMetric(mid, "on/off")
	b.ReportMetric(lo, "on/off-lo")
	b.ReportMetric(hi, "on/off-hi")
	b.ReportMetric(float64(onSum.Nanoseconds())/(pairs*block), "on-ns/call")
	b.ReportMetric(float64(offSum.Nanoseconds())/(pairs*block), "off-ns/call")
}

package bench

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"google.golang.org/grpc"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/transport/trim"
)

// The shares runs: open-loop load at each of sharesRates on three real
// trimsvc processes, sharesWarm to settle, then sharesRun counted.
const (
	sharesWarm = time.Second
	sharesRun  = 5 * time.Second
)

var sharesRates = []float64{250, 1000, 2000, 4000}

// BenchmarkShares sends p2c's calls to three equal, real trimsvc processes
// at each of sharesRates calls/s and reports how evenly they are spread:
// each instance's share of the attempts and max/mean, with p2c as it was
// (the cost is latency alone: the load trailers are dropped on the client)
// and with the load in answers. Run with -benchtime 1x.
func BenchmarkShares(b *testing.B) {
	agent := testenv.Consul(b)
	var addrs, ids []string
	for range 3 {
		in := testenv.StartTrimsvc(b, bins.Trimsvc(b), agent.HTTPAddr)
		addrs, ids = append(addrs, in.Addr), append(ids, in.ID)
	}
	agent.WaitPassing("trimsvc", ids...)
	rows := []struct {
		name string
		opts []grpc.DialOption
	}{
		{"latency-only", []grpc.DialOption{grpc.WithChainUnaryInterceptor(dropTrailers)}},
		{"load", nil},
	}
	for _, row := range rows {
		for _, rate := range sharesRates {
			shares, calls := sharesRun1(b, addrs, rate, row.opts)
			prefix := fmt.Sprintf("%s/%g/", row.name, rate)
			for i, s := range shares {
				b.ReportMetric(s, fmt.Sprintf("%sshare%d", prefix, i))
			}
			b.ReportMetric(slices.Max(shares)*float64(len(shares)), prefix+"max_mean")
			b.ReportMetric(calls, prefix+"calls_per_s")
		}
	}
}

// dropTrailers keeps the trailers from the interceptors before it (the
// Factory's load tracking), as a client before the load trailers was.
func dropTrailers(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	opts = slices.DeleteFunc(slices.Clone(opts), func(o grpc.CallOption) bool {
		_, ok := o.(grpc.TrailerCallOption)
		return ok
	})
	return invoker(ctx, method, req, reply, cc, opts...)
}

// sharesRun1 runs one cell: each instance's share of the attempts sent
// after the warm-up, and the successful calls a second.
func sharesRun1(b *testing.B, addrs []string, rate float64, opts []grpc.DialOption) ([]float64, float64) {
	var counting atomic.Bool // attempts count after the warm-up
	counts := map[string]*atomic.Int64{}
	for _, a := range addrs {
		counts[a] = new(atomic.Int64)
	}
	factory := func(instance string) (endpoint.Endpoint, io.Closer, error) {
		e, c, err := client.Factory(trim.Endpoints, opts...)(instance)
		if err != nil {
			return nil, nil, err
		}
		n := counts[instance]
		return func(ctx context.Context, req any) (any, error) {
			if counting.Load() {
				n.Add(1)
			}
			return e(ctx, req)
		}, c, nil
	}
	endpointer, err := client.NewEndpointer(kitsd.FixedInstancer(addrs), factory, log.NewNopLogger(), client.EndpointerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer endpointer.Close()
	call, err := client.Retry(client.NewP2C(endpointer), client.RetryConfig{})
	if err != nil {
		b.Fatal(err)
	}
	load := loadgen.Start(context.Background(), call, benchInput, loadgen.Options{Rate: rate, Duration: sharesWarm + sharesRun, SummaryOnly: true})
	time.Sleep(sharesWarm)
	counting.Store(true)
	load.Wait()
	counting.Store(false)
	if sum, failures := load.Summary(); sum.Failures > 0 {
		b.Errorf("%g calls/s: %d of %d calls failed: %v", rate, sum.Failures, sum.Requests, failures)
	}
	var total int64
	for _, a := range addrs {
		total += counts[a].Load()
	}
	shares := make([]float64, len(addrs))
	for i, a := range addrs {
		shares[i] = float64(counts[a].Load()) / max(float64(total), 1)
	}
	return shares, float64(total) / sharesRun.Seconds()
}

package bench

import (
	"context"
	"io"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/log"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/internal/proc"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport/trim"
)

// BenchmarkFailover puts 3 real trimsvc processes (check interval 1s) under
// load from 8 callers through the client stack, SIGKILLs one after 2s and
// keeps the load 4s more. It reports failures, p99 before and after the
// kill, and for how long attempts still went to the dead instance. Run with
// -benchtime 1x.
func BenchmarkFailover(b *testing.B) {
	agent := testenv.Consul(b)
	var insts []*proc.Trimsvc
	var ids []string
	for range 3 {
		in := testenv.StartTrimsvc(b, bins.Trimsvc(b), agent.HTTPAddr)
		insts = append(insts, in)
		ids = append(ids, in.ID)
	}
	agent.WaitPassing("trimsvc", ids...)
	dead := insts[0]

	// The client's stack from its pieces, with a factory that notes every
	// attempt sent to the instance about to die.
	var lastDeadAttempt atomic.Int64
	factory := func(instance string) (endpoint.Endpoint, io.Closer, error) {
		e, closer, err := client.Factory(trim.Endpoints)(instance)
		if err != nil || instance != dead.Addr {
			return e, closer, err
		}
		return func(ctx context.Context, req interface{}) (interface{}, error) {
			lastDeadAttempt.Store(time.Now().UnixNano())
			return e(ctx, req)
		}, closer, nil
	}
	instancer, err := sd.NewInstancer(sd.NewClient(agent.API()), log.NewNopLogger(), "trimsvc", nil, true)
	if err != nil {
		b.Fatal(err)
	}
	defer instancer.Stop()
	endpointer, err := client.NewEndpointer(instancer, factory, log.NewNopLogger(), client.EndpointerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer endpointer.Close()
	call, err := client.Retry(client.NewRoundRobin(endpointer), client.RetryConfig{})
	if err != nil {
		b.Fatal(err)
	}

	load := loadgen.Start(context.Background(), call, "fail over", loadgen.Options{Callers: 8})
	time.Sleep(2 * time.Second)
	killAt := time.Now()
	if err := dead.Signal(syscall.SIGKILL); err != nil {
		b.Fatal(err)
	}
	time.Sleep(4 * time.Second)
	samples, _ := load.Stop()

	var before, after []time.Duration
	failures := 0
	for _, s := range samples {
		if s.Err != nil {
			failures++
			if failures <= 3 {
				b.Logf("failure: %v", s.Err)
			}
		}
		if s.Start.Before(killAt) {
			before = append(before, s.Took)
		} else {
			after = append(after, s.Took)
		}
	}
	b.ReportMetric(float64(len(samples)), "requests")
	b.ReportMetric(float64(failures), "failures")
	b.ReportMetric(ms(loadgen.Percentile(sorted(before), 99)), "p99_before_ms")
	b.ReportMetric(ms(loadgen.Percentile(sorted(after), 99)), "p99_during_ms")
	b.ReportMetric(ms(max(0, time.Unix(0, lastDeadAttempt.Load()).Sub(killAt))), "dead_attempts_for_ms")
}

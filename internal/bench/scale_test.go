package bench

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-kit/log"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/localconsul"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport"
)

// BenchmarkScale watches a service with 1,000 instances in a real Consul:
// one in-process gRPC server listening on 1,000 loopback ports, each port
// registered through the API as an instance without a health check (so
// passing at once). It reports the client's heap, the time from building the
// stack to the first successful call, and the CPU this process spends when
// one instance joins or leaves (the blocking query's answer, decoding 1,001
// entries, and the endpointer's update). Run with -benchtime 1x.
func BenchmarkScale(b *testing.B) {
	const n = 1000
	agent := testenv.Consul(b)
	c := agent.API()
	srv := startServer(b, "scale", n+1, nil)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := registerErr(c, fmt.Sprintf("scale-%d", i), srv.addrs[i], false); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := localconsul.WaitPassing(ctx, c, "trimsvc", localconsul.Count(n)); err != nil {
		b.Fatal(err)
	}

	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	start := time.Now()
	instancer, err := sd.NewInstancer(sd.NewClient(c), log.NewNopLogger(), "trimsvc", nil, true)
	if err != nil {
		b.Fatal(err)
	}
	defer instancer.Stop()
	endpointer, err := client.NewEndpointer(instancer, client.Factory(transport.Endpoints), log.NewNopLogger())
	if err != nil {
		b.Fatal(err)
	}
	defer endpointer.Close()
	call, err := client.Retry(client.NewRoundRobin(endpointer), client.RetryConfig{})
	if err != nil {
		b.Fatal(err)
	}
	svc := transport.Client{TrimSpaceEndpoint: call}
	if _, err := svc.TrimSpace(context.Background(), "first call"); err != nil {
		b.Fatal(err)
	}
	firstCall := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&m1)

	// One instance joins and leaves, 5 times; CPU of this process per change.
	var joinCPU, leaveCPU time.Duration
	const rounds = 5
	for range rounds {
		cpu := cpuTime()
		register(b, c, "scale-extra", srv.addrs[n], false)
		waitEndpoints(b, endpointer, n+1)
		joinCPU += cpuTime() - cpu

		cpu = cpuTime()
		if err := c.Agent().ServiceDeregister("scale-extra"); err != nil {
			b.Fatal(err)
		}
		waitEndpoints(b, endpointer, n)
		leaveCPU += cpuTime() - cpu
	}

	b.ReportMetric(float64(n), "instances")
	b.ReportMetric(float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc))/(1<<20), "heap_MiB")
	b.ReportMetric(ms(firstCall), "first_call_ms")
	b.ReportMetric(ms(joinCPU/rounds), "join_cpu_ms")
	b.ReportMetric(ms(leaveCPU/rounds), "leave_cpu_ms")
}

// waitEndpoints waits until e holds n endpoints.
func waitEndpoints(b *testing.B, e *client.Endpointer, n int) {
	b.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		eps, _ := e.Endpoints()
		if len(eps) == n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("endpointer has %d endpoints, want %d", len(eps), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// cpuTime is the user and system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

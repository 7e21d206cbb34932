package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/internal/proc"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/sd"
)

// TestOverloadedFleetStaysUpAndRecovers offers three real trimsvc
// instances (adaptive concurrency limits, as by default) three times what
// they served in a closed loop, for 3s, through a client as configured by
// default (shed calls retried elsewhere, throttling), then a third of that
// capacity: no instance falls over, the health check passes throughout, in
// Consul and asked directly, and every call due a second after the load
// dropped succeeds.
func TestOverloadedFleetStaysUpAndRecovers(t *testing.T) {
	// Consul's check times out after 2s, as with the default interval.
	agent, insts := cluster(t, 3, "-check-interval", "2s")
	c := newClient(t, client.Config{Consul: sd.ConsulConfig{Address: agent.HTTPAddr}})
	waitInstances(t, c.Endpoint(), 3)
	// Large inputs make the calls, not the load generator, the work.
	input := " " + strings.Repeat("trim me ", 12<<10) + " "

	warm := loadgen.Start(context.Background(), c.Endpoint(), input, loadgen.Options{Callers: 6, Duration: time.Second, SummaryOnly: true})
	warm.Wait()
	sum, errs := warm.Summary()
	if sum.Failures > 0 {
		t.Fatalf("closed loop: %d of %d calls failed: %v", sum.Failures, sum.Requests, errs)
	}
	capacity := sum.RPS
	t.Logf("closed-loop capacity: %.0f calls/s", capacity)

	watch := watchHealth(t, agent, insts)
	over := loadgen.Start(context.Background(), c.Endpoint(), input, loadgen.Options{Rate: 3 * capacity, Duration: 3 * time.Second})
	time.Sleep(3 * time.Second)
	dropped := time.Now()
	normal := loadgen.Start(context.Background(), c.Endpoint(), input, loadgen.Options{Rate: capacity / 3, Duration: 3 * time.Second})
	overCalls, overTook := over.Wait()
	normalCalls, _ := normal.Wait()
	unhealthy := watch()

	kinds := map[string]int{}
	for _, call := range overCalls {
		var te *client.ThrottledError
		switch {
		case call.Err == nil:
		case errors.As(call.Err, &te):
			kinds["throttled"]++
		default:
			kinds[status.Code(call.Err).String()]++
		}
	}
	t.Logf("overload failures: %v", kinds)
	overSum, _ := loadgen.Summarize(overCalls, overTook)
	goodput := float64(overSum.Requests-overSum.Failures) / overTook.Seconds()
	t.Logf("at %.0f calls/s: %.0f calls/s served (%.0f%% of capacity), %d refused or throttled, p99 of all %.0fms",
		3*capacity, goodput, 100*goodput/capacity, overSum.Failures, overSum.P99ms)
	// Here the instances, the callers and Consul share two cores, and a
	// shed call's 96 KiB still cross the connection before it is refused:
	// the fleet served 24-50% of its capacity at 3x in runs on one such
	// machine, and 9% without the limits (-concurrency-limit off); the
	// benchmark's Overload section measures goodput where the bottleneck
	// is the service's. Here: the fleet goes on serving.
	if goodput < capacity/10 {
		t.Errorf("goodput at 3x capacity: %.0f calls/s, want at least a tenth of the capacity of %.0f", goodput, capacity)
	}
	// Every call due a second after the drop succeeds; the failures
	// before, by 100ms from the drop, are logged.
	var after [10]int
	late := 0
	for _, call := range normalCalls {
		if call.Err == nil {
			continue
		}
		since := call.Start.Sub(dropped)
		if since > time.Second {
			if late++; late <= 3 {
				t.Errorf("a call due %v after the load dropped failed: %v", since.Round(time.Millisecond), call.Err)
			}
			continue
		}
		after[min(max(0, int(since/(100*time.Millisecond))), len(after)-1)]++
	}
	t.Logf("after the drop, failed calls by 100ms: %v; later: %d of %d calls", after, late, len(normalCalls))
	for _, in := range insts {
		select {
		case <-in.Exited():
			t.Errorf("instance %s exited under overload", in.ID)
		default:
		}
	}
	for _, u := range unhealthy {
		t.Error(u)
	}
}

// watchHealth asks each instance's grpc.health.v1 service directly and
// Consul for the instances' checks, every 100ms, until the returned stop
// is called; stop returns what was not healthy.
func watchHealth(t *testing.T, agent *testenv.Agent, insts []*proc.Trimsvc) (stop func() []string) {
	t.Helper()
	var (
		mu   sync.Mutex
		bad  []string
		wg   sync.WaitGroup
		done = make(chan struct{})
	)
	report := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(bad) < 10 {
			bad = append(bad, fmt.Sprintf(format, args...))
		}
	}
	every := func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-done:
					return
				case <-tick.C:
					f()
				}
			}
		}()
	}
	for _, in := range insts {
		conn, err := grpc.NewClient(in.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		health := healthpb.NewHealthClient(conn)
		every(func() {
			// The deadline allows for this process's own load: what
			// matters is that the check is answered, SERVING, never
			// refused as busy.
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
			if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				report("%s: health check at %s: %v %v", in.ID, time.Now().Format("15:04:05.000"), resp.GetStatus(), err)
			}
		})
	}
	every(func() {
		entries, _, err := agent.API().Health().Service("trimsvc", "", false, nil)
		if err != nil {
			report("consul: %v", err)
			return
		}
		for _, e := range entries {
			for _, check := range e.Checks {
				if check.Status != "passing" {
					report("consul: %s check %s is %s at %s: %s", e.Service.ID, check.CheckID, check.Status, time.Now().Format("15:04:05.000"), check.Output)
				}
			}
		}
		if len(entries) != len(insts) {
			report("consul: %d instances registered, want %d", len(entries), len(insts))
		}
	})
	return func() []string {
		close(done)
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return bad
	}
}

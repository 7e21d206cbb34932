package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/trimkit/trimkit/internal/proc"
	"github.com/trimkit/trimkit/internal/testenv"
)

// TestOverloadedFleetStaysUpAndRecovers offers three real trimsvc
// instances (adaptive concurrency limits, as by default) three times what
// they served in a closed loop, for 3s, through a client as configured by
// default (shed calls retried elsewhere, throttling), then a third of that
// capacity: no instance falls over, the health check passes throughout, in
// Consul and asked directly, and every call due a second after the load
// dropped succeeds. The caller is a process of its own
// (internal/overloadrun), so that what is overloaded is the instances, not
// this race-instrumented test binary.
func TestOverloadedFleetStaysUpAndRecovers(t *testing.T) {
	// Consul's check times out after 2s, as with the default interval.
	agent, insts := cluster(t, 3, "-check-interval", "2s")
	watch := watchHealth(t, agent, insts)
	caller := testenv.Start(t, bins.Path(t, "github.com/trimkit/trimkit/internal/overloadrun"), "-consul-addr", agent.HTTPAddr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code, err := caller.Wait(ctx)
	unhealthy := watch()
	if err != nil || code != 0 {
		t.Fatalf("overloadrun: exit %d, %v:\n%s", code, err, strings.Join(caller.Lines(), "\n"))
	}
	var r struct {
		Capacity, Offered, Goodput float64
		Failures                   map[string]int
		AfterFailed                []int    `json:"after_failed"`
		LateCalls                  int      `json:"late_calls"`
		LateFailed                 int      `json:"late_failed"`
		LateErrors                 []string `json:"late_errors"`
	}
	if err := json.Unmarshal([]byte(caller.Stdout()), &r); err != nil {
		t.Fatalf("overloadrun's result %q: %v", caller.Stdout(), err)
	}
	t.Logf("closed-loop capacity %.0f calls/s; at %.0f calls/s, %.0f served (%.0f%% of capacity), failures %v",
		r.Capacity, r.Offered, r.Goodput, 100*r.Goodput/r.Capacity, r.Failures)
	t.Logf("after the drop, failed calls by 100ms: %v; later: %d of %d calls", r.AfterFailed, r.LateFailed, r.LateCalls)
	// Goodput under overload is not asserted here: the instances, the
	// caller, Consul and the other tests share two cores, and a shed
	// call's 96 KiB still cross the connection before it is refused, so
	// it depends on what else runs (31-50% of the capacity alone, 7% under
	// a loaded make test; 9% without the limits, alone). The benchmark's
	// Overload section measures it where the bottleneck is the service's.
	if r.LateCalls == 0 || r.LateFailed > 0 {
		t.Errorf("calls due a second after the load dropped: %d of %d failed, want every one to succeed: %v", r.LateFailed, r.LateCalls, r.LateErrors)
	}
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

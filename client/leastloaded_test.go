package client_test

import (
	"context"
	"strings"
	"testing"
	"time"

	kitsd "github.com/go-kit/kit/sd"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport/trim"
)

// hammer calls the instances tagged "hammered" from another process (a
// closed loop of cmd/client callers with a heavy input) until stop, as
// another service with a client of its own would.
func hammer(t *testing.T, consulAddr string) (stop func()) {
	t.Helper()
	heavy := strings.Repeat("a b c d ", 1<<13) // 64 KiB, under a command line's limit
	p := testenv.Start(t, bins.Client(t), "-consul-addr", consulAddr, "-tags", "hammered", "-c", "8", "-duration", "1h", heavy)
	return func() { p.Kill() }
}

// share is the fraction of calls instance answered.
func share(calls []loadgen.Call, instance string) float64 {
	n := 0
	for _, c := range calls {
		if c.Instance == instance {
			n++
		}
	}
	return float64(n) / float64(max(len(calls), 1))
}

// TestLeastLoadedAvoidsAnInstanceOthersHammer: with another caller
// hammering one of three instances, a least-loaded client sends it clearly
// fewer calls than a round-robin one, which cannot know.
func TestLeastLoadedAvoidsAnInstanceOthersHammer(t *testing.T) {
	agent, insts := cluster(t, 2, "-load-report-interval", "200ms")
	hammered := testenv.StartTrimsvc(t, bins.Trimsvc(t), agent.HTTPAddr, "-load-report-interval", "200ms", "-tags", "hammered")
	agent.WaitPassing("trimsvc", insts[0].ID, insts[1].ID, hammered.ID)
	rr := newClient(t, client.Config{Consul: sd.ConsulConfig{Address: agent.HTTPAddr}})
	ll := newClient(t, client.Config{Consul: sd.ConsulConfig{Address: agent.HTTPAddr}, CallConfig: client.CallConfig{Balancer: client.LeastLoadedName}})
	waitInstances(t, rr.Endpoint(), 3)
	waitInstances(t, ll.Endpoint(), 3)

	stop := hammer(t, agent.HTTPAddr)
	defer stop()
	time.Sleep(time.Second) // a few reports with the hammer's load in them
	rrCalls, _ := loadgen.Start(context.Background(), rr.Endpoint(), "x", loadgen.Options{Rate: 200, Duration: 2 * time.Second}).Wait()
	llCalls, _ := loadgen.Start(context.Background(), ll.Endpoint(), "x", loadgen.Options{Rate: 200, Duration: 2 * time.Second}).Wait()
	rrShare, llShare := share(rrCalls, hammered.ID), share(llCalls, hammered.ID)
	t.Logf("share of the hammered instance: round robin %.1f%%, least-loaded %.1f%%", 100*rrShare, 100*llShare)
	if llShare > rrShare/2 {
		t.Errorf("least-loaded sent the hammered instance %.1f%% of its calls, round robin %.1f%%: want clearly fewer", 100*llShare, 100*rrShare)
	}
	for name, calls := range map[string][]loadgen.Call{"round robin": rrCalls, "least-loaded": llCalls} {
		if n := failures(t, calls); n > 0 {
			t.Errorf("%s: %d calls failed", name, n)
		}
	}
}

func TestLeastLoadedNeedsReports(t *testing.T) {
	_, err := client.NewFromInstancer(kitsd.FixedInstancer{"127.0.0.1:1"}, client.CallConfig{Balancer: client.LeastLoadedName}, trim.Endpoints)
	if err == nil || !strings.Contains(err.Error(), "load reports") {
		t.Errorf("least-loaded without load reports: want an error saying so, have %v", err)
	}
}

package client_test

import (
	"context"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/internal/proctest"
)

// TestRollingRestart replaces each of 3 instances in turn under continuous
// load from the client package: SIGTERM it, start a successor on a new port,
// wait for the successor to pass. No request may fail, every successor must
// answer, and no request may reach an instance after it left Consul.
func TestRollingRestart(t *testing.T) {
	agent, insts := cluster(t, 3, "-drain", "500ms")
	c := newClient(t, client.Config{ConsulAddr: agent.HTTPAddr})
	waitInstances(t, c.Endpoint(), 3)

	load := loadgen.Record(c.Endpoint(), " roll ing ", 8)

	current := []string{insts[0].ID, insts[1].ID, insts[2].ID}
	goneAt := map[string]time.Time{}
	var successors []string
	for i, old := range insts {
		time.Sleep(300 * time.Millisecond) // load on the full set between swaps
		if err := old.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		current = slices.DeleteFunc(current, func(id string) bool { return id == old.ID })
		goneAt[old.ID] = agent.WaitPassing("trimsvc", current...)
		next := proctest.StartTrimsvc(t, trimsvcBin, agent.HTTPAddr, "-drain", "500ms")
		current = append(current, next.ID)
		successors = append(successors, next.ID)
		agent.WaitPassing("trimsvc", current...)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		code, err := old.Wait(ctx)
		cancel()
		if err != nil || code != 0 {
			t.Errorf("instance %d (%s) exited %d (%v), want 0", i, old.ID, code, err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	results := load.Stop()

	per := map[string]int{}
	latencies := make([]time.Duration, 0, len(results))
	late := 0
	for _, r := range results {
		per[r.Instance]++
		latencies = append(latencies, r.Took)
		// A margin for the client's blocking query to return after the
		// test saw the instance gone.
		if g, ok := goneAt[r.Instance]; ok && r.Start.After(g.Add(250*time.Millisecond)) {
			late++
		}
	}
	slices.Sort(latencies)
	p99 := latencies[len(latencies)*99/100]
	if want, have := 0, failures(t, results); want != have {
		t.Errorf("failures: want %d, have %d of %d", want, have, len(results))
	}
	for _, id := range successors {
		if per[id] == 0 {
			t.Errorf("successor %s answered no request", id)
		}
	}
	if late > 0 {
		t.Errorf("%d requests reached an instance after it left consul", late)
	}
	t.Logf("rolling restart: %d requests, %d failures, p99 %v, per instance %v", len(results), failures(t, results), p99, per)
}

package client_test

import (
	"context"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/internal/testenv"
)

// TestRollingRestart replaces each of 3 instances in turn under continuous
// load through the client stack: SIGTERM it, start a successor on a new
// port, wait for the successor to pass. No request may fail, every
// successor must answer, and no request that starts after the client
// dropped an instance may reach it.
func TestRollingRestart(t *testing.T) {
	agent, insts := cluster(t, 3, "-drain", "500ms")
	s := newStack(t, agent)
	waitInstances(t, s.call, 3)

	load := loadgen.Start(context.Background(), s.call, " roll ing ", loadgen.Options{Callers: 8})

	current := []string{insts[0].ID, insts[1].ID, insts[2].ID}
	goneAt := map[string]time.Time{}
	var successors []string
	for i, old := range insts {
		time.Sleep(300 * time.Millisecond) // load on the full set between swaps
		if err := old.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		current = slices.DeleteFunc(current, func(id string) bool { return id == old.ID })
		goneAt[old.ID] = waitEndpoints(t, s.endpointer, 2)
		next := testenv.StartTrimsvc(t, bins.Trimsvc(t), agent.HTTPAddr, "-drain", "500ms")
		current = append(current, next.ID)
		successors = append(successors, next.ID)
		agent.WaitPassing("trimsvc", current...)
		waitEndpoints(t, s.endpointer, 3)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		code, err := old.Wait(ctx)
		cancel()
		if err != nil || code != 0 {
			t.Errorf("instance %d (%s) exited %d (%v), want 0", i, old.ID, code, err)
		}
	}
	time.Sleep(500 * time.Millisecond) // load on the successors alone
	calls, _ := load.Stop()

	per := map[string]int{}
	late := 0
	for _, c := range calls {
		per[c.Instance]++
		if g, ok := goneAt[c.Instance]; ok && c.Start.After(g) {
			late++
		}
	}
	s99, _ := loadgen.Summarize(calls, 0)
	if want, have := 0, failures(t, calls); want != have {
		t.Errorf("failures: want %d, have %d of %d", want, have, len(calls))
	}
	for _, id := range successors {
		if per[id] == 0 {
			t.Errorf("successor %s answered no request", id)
		}
	}
	if late > 0 {
		t.Errorf("%d requests started after the client dropped an instance reached it", late)
	}
	t.Logf("rolling restart: %d requests, p99 %.2fms, per instance %v", len(calls), s99.P99ms, per)
}

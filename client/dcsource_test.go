package client

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/sd"
)

// fixedCatalog is an sd.Client whose catalog holds entries: it answers
// the first query of a watch at once and blocks the next ones until
// their context ends.
type fixedCatalog struct {
	sd.Client
	entries []sd.Entry
}

func (f fixedCatalog) Service(ctx context.Context, _ string, _ []string, _ bool, q *api.QueryOptions) ([]sd.Entry, *api.QueryMeta, error) {
	if q != nil && q.WaitIndex > 0 {
		<-ctx.Done()
		return nil, nil, ctx.Err()
	}
	return f.entries, &api.QueryMeta{LastIndex: 1}, nil
}

// watch is a watch of service "svc" in f.
func (f fixedCatalog) watch(t *testing.T) *sd.Instancer {
	t.Helper()
	w, err := sd.NewInstancer(f, log.NewNopLogger(), "svc", nil, true)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// With Near, the distances read put each instance in its datacenter's
// near or far tier, and distances read again move an instance whose node
// crossed the line, in an update of the bands that changed only.
func TestDCSourceNearTiers(t *testing.T) {
	consul := fixedCatalog{entries: []sd.Entry{
		{ID: "a", Service: "svc", Node: "n1", Address: "127.0.0.1", Port: 1},
		{ID: "b", Service: "svc", Node: "n2", Address: "127.0.0.1", Port: 2},
		{ID: "c", Service: "svc", Node: "n3", Address: "127.0.0.1", Port: 3},
	}}
	s := newDCSource([]string{""}, []*sd.Instancer{consul.watch(t)}, []*sd.Instancer{consul.watch(t)}, locality{near: true})
	defer s.Stop()
	ch := make(chan bandUpdate, 4)
	if n := s.registerBands(ch); n != 2 {
		t.Fatalf("%d bands, want 2: near and far nodes", n)
	}
	if u := <-ch; !slices.Equal(u[0].instances, []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}) || len(u[1].instances) != 0 {
		t.Fatalf("before any distance: bands %+v, want every instance near", u)
	}
	ms := time.Millisecond
	s.setDistances("dc1", map[string]time.Duration{"n1": ms / 2, "n2": 5 * ms / 4, "n3": 30 * ms})
	u := <-ch
	if len(u) != 2 || !slices.Equal(u[0].instances, []string{"127.0.0.1:1", "127.0.0.1:2"}) || !slices.Equal(u[1].instances, []string{"127.0.0.1:3"}) || u[1].registered != 1 {
		t.Fatalf("n1 0.5ms away, n2 1.25ms, n3 30ms: bands %+v, want n1 and n2 near (within 0.5ms+1ms), n3 far", u)
	}
	if u[0].name != "local nearby nodes" || u[1].name != "local farther nodes" {
		t.Errorf("bands named %q and %q", u[0].name, u[1].name)
	}
	s.setDistances("dc1", map[string]time.Duration{"n1": ms / 2, "n2": 2 * ms, "n3": 30 * ms})
	if u := <-ch; len(u) != 2 || !slices.Equal(u[0].instances, []string{"127.0.0.1:1"}) || !slices.Equal(u[1].instances, []string{"127.0.0.1:2", "127.0.0.1:3"}) {
		t.Fatalf("n2 now 2ms away: bands %+v, want it far", u)
	}
	s.setDistances("dc1", map[string]time.Duration{"n1": ms / 2, "n2": 3 * ms, "n3": 30 * ms})
	select {
	case u := <-ch:
		t.Errorf("distances that move no instance across the line sent %+v", u)
	default:
	}
}

// The distances of another datacenter (the agent's, when the client
// watches a named one that is not it) split nothing.
func TestDCSourceNearOtherDatacenter(t *testing.T) {
	consul := fixedCatalog{entries: []sd.Entry{{ID: "a", Service: "svc", Node: "n1", Address: "127.0.0.1", Port: 1}, {ID: "b", Service: "svc", Node: "n2", Address: "127.0.0.1", Port: 2}}}
	s := newDCSource([]string{"dc2"}, []*sd.Instancer{consul.watch(t)}, []*sd.Instancer{consul.watch(t)}, locality{near: true})
	defer s.Stop()
	s.setDistances("dc1", map[string]time.Duration{"n1": time.Millisecond, "n2": time.Second})
	s.mu.Lock()
	u := s.bands()
	s.mu.Unlock()
	if len(u[0].instances) != 2 || len(u[1].instances) != 0 {
		t.Errorf("dc1's distances, watching dc2: bands %+v, want both instances in the first", u)
	}
}

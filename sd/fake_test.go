package sd_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/sd"
)

// answer is what the fake answers one health query with.
type answer struct {
	instances   []string // host:port
	index       uint64
	err         error
	lastContact time.Duration
	noLeader    bool
}

// query is one health query the fake received.
type query struct {
	waitIndex uint64
	stale     bool
	cached    bool
	reply     chan<- answer
}

// fakeConsul is an sd.Client whose health queries are answered by the test:
// each query is sent on queries and blocks until the test replies (or its
// context ends). Registrations are kept in a map; failures to register are
// taken from registerErrs, one per call, while any remain.
type fakeConsul struct {
	queries chan query

	mu           sync.Mutex
	services     map[string]*api.AgentServiceRegistration
	registerErrs []error
	registers    int
	serviceErrs  []error // failures of AgentService, one per call, while any remain
	lookups      int     // AgentService calls
	leader       string
	leaderErrs   []error // failures of Leader, one per call, while any remain
}

var _ sd.Client = (*fakeConsul)(nil)

func newFakeConsul() *fakeConsul {
	return &fakeConsul{queries: make(chan query), services: map[string]*api.AgentServiceRegistration{}, leader: "10.0.0.100:8300"}
}

func (f *fakeConsul) Service(ctx context.Context, _ string, _ []string, _ bool, q *api.QueryOptions) ([]sd.Entry, *api.QueryMeta, error) {
	reply := make(chan answer, 1)
	select {
	case f.queries <- query{waitIndex: q.WaitIndex, stale: q.AllowStale, cached: q.UseCache, reply: reply}:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	select {
	case a := <-reply:
		if a.err != nil {
			return nil, nil, a.err
		}
		var entries []sd.Entry
		for i, inst := range a.instances {
			host, port := splitHostPort(inst)
			if host == "" {
				host = "10.9.9.9" // the node's address, as decoding gives it
			}
			entries = append(entries, sd.Entry{ID: fmt.Sprintf("%s#%d", inst, i), Address: host, Port: port, Status: api.HealthPassing})
		}
		return entries, &api.QueryMeta{LastIndex: a.index, LastContact: a.lastContact, KnownLeader: !a.noLeader}, nil
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
}

func (f *fakeConsul) Leader(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.leaderErrs) > 0 {
		err := f.leaderErrs[0]
		f.leaderErrs = f.leaderErrs[1:]
		return "", err
	}
	return f.leader, nil
}

func (f *fakeConsul) Register(_ context.Context, reg *api.AgentServiceRegistration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.registers++
	if len(f.registerErrs) > 0 {
		err := f.registerErrs[0]
		f.registerErrs = f.registerErrs[1:]
		return err
	}
	f.services[reg.ID] = reg
	return nil
}

func (f *fakeConsul) Deregister(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.services, id)
	return nil
}

func (f *fakeConsul) AgentService(_ context.Context, id string) (*api.AgentService, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups++
	if len(f.serviceErrs) > 0 {
		err := f.serviceErrs[0]
		f.serviceErrs = f.serviceErrs[1:]
		return nil, err
	}
	if _, ok := f.services[id]; !ok {
		return nil, api.StatusError{Code: http.StatusNotFound, Body: "unknown service ID"}
	}
	return &api.AgentService{ID: id}, nil
}

package sd_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/sd"
)

func splitHostPort(hp string) (string, int) {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		panic(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		panic(err)
	}
	return host, p
}

// serve waits for the Instancer's next query, checks the index it blocks
// on, and answers it.
func (f *fakeConsul) serve(t *testing.T, wantIndex uint64, a answer) {
	t.Helper()
	select {
	case q := <-f.queries:
		if want, have := wantIndex, q.waitIndex; want != have {
			t.Errorf("query blocked on index %d, want %d", have, want)
		}
		q.reply <- a
	case <-time.After(10 * time.Second):
		t.Fatalf("no query for index %d within 10s", wantIndex)
	}
}

func nextEvent(t *testing.T, events <-chan kitsd.Event) kitsd.Event {
	t.Helper()
	select {
	case ev := <-events:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
		return kitsd.Event{}
	}
}

// newInstancer is sd.NewInstancer of trimsvc's passing instances through
// f; it may run on a goroutine of its own (a failure is t.Error, and nil).
func newInstancer(t *testing.T, f sd.Client, opts ...sd.InstancerOption) *sd.Instancer {
	s, err := sd.NewInstancerWith(f, log.NewNopLogger(), "trimsvc", nil, true, opts...)
	if err != nil {
		t.Errorf("NewInstancer: %v", err)
	}
	return s
}

func TestInstancerIndexHandling(t *testing.T) {
	f := newFakeConsul()
	started := make(chan *sd.Instancer)
	go func() { started <- newInstancer(t, f) }()
	f.serve(t, 0, answer{instances: []string{"10.0.0.1:80"}, index: 10})
	s := <-started
	defer s.Stop()
	events := make(chan kitsd.Event, 1)
	s.Register(events)
	if ev := nextEvent(t, events); !slices.Equal(ev.Instances, []string{"10.0.0.1:80"}) {
		t.Fatalf("first state: %+v", ev)
	}

	// The index goes backwards (a restarted agent): the answer counts, and
	// the watch starts over from 0.
	f.serve(t, 10, answer{instances: []string{"10.0.0.2:80"}, index: 5})
	if ev := nextEvent(t, events); !slices.Equal(ev.Instances, []string{"10.0.0.2:80"}) {
		t.Errorf("after index went backwards: %+v", ev)
	}
	// Index 0 would make every query return at once: it becomes 1.
	f.serve(t, 0, answer{instances: []string{"10.0.0.2:80"}, index: 0})
	f.serve(t, 1, answer{err: errors.New("connection refused")})
	ev := nextEvent(t, events)
	if ev.Err == nil || !slices.Equal(ev.Instances, []string{"10.0.0.2:80"}) {
		t.Errorf("failed query: want the error and the last instances, have %+v", ev)
	}
	// A second failure in a row is not news; the index is kept across them.
	f.serve(t, 1, answer{err: errors.New("connection refused")})
	// Recovery with the same instances clears the error.
	f.serve(t, 1, answer{instances: []string{"10.0.0.2:80"}, index: 12})
	if ev := nextEvent(t, events); ev.Err != nil || len(ev.Instances) != 1 {
		t.Errorf("after recovery: %+v", ev)
	}
	// An empty passing list is news too.
	f.serve(t, 12, answer{instances: nil, index: 13})
	if ev := nextEvent(t, events); ev.Err != nil || len(ev.Instances) != 0 {
		t.Errorf("all gone: %+v", ev)
	}
	// An answer that changes nothing sends no event.
	f.serve(t, 13, answer{instances: nil, index: 14})
	f.serve(t, 14, answer{instances: []string{"10.0.0.3:80"}, index: 15})
	if ev := nextEvent(t, events); !slices.Equal(ev.Instances, []string{"10.0.0.3:80"}) {
		t.Errorf("want the change after an unchanged answer, have %+v", ev)
	}
	// Node address stands in for an empty service address, sorted and
	// deduplicated.
	f.serve(t, 15, answer{instances: []string{"10.0.0.3:80", ":81", "10.0.0.3:80"}, index: 16})
	if ev := nextEvent(t, events); !slices.Equal(ev.Instances, []string{"10.0.0.3:80", "10.9.9.9:81"}) {
		t.Errorf("addresses: %+v", ev)
	}
}

func TestInstancerStopCancelsBlockingQuery(t *testing.T) {
	f := newFakeConsul()
	started := make(chan *sd.Instancer)
	go func() { started <- newInstancer(t, f) }()
	f.serve(t, 0, answer{index: 3})
	s := <-started
	// The watch is now blocked in a query that only its context ends.
	select {
	case <-f.queries:
	case <-time.After(10 * time.Second):
		t.Fatal("no blocking query")
	}
	stopped := make(chan struct{})
	go func() { s.Stop(); s.Stop(); close(stopped) }() // twice is fine
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not cancel the blocking query")
	}
}

func TestInstancerFirstQueryFails(t *testing.T) {
	f := newFakeConsul()
	started := make(chan *sd.Instancer)
	go func() { started <- newInstancer(t, f) }()
	f.serve(t, 0, answer{err: errors.New("connection refused")})
	s := <-started
	defer s.Stop()
	if st := s.State(); st.Err == nil || len(st.Instances) != 0 {
		t.Errorf("state after a failed first query: %+v", st)
	}
	// The watch retries from index 0 and recovers.
	events := make(chan kitsd.Event, 1)
	s.Register(events)
	nextEvent(t, events)
	f.serve(t, 0, answer{instances: []string{"10.0.0.1:80"}, index: 7})
	if ev := nextEvent(t, events); ev.Err != nil || len(ev.Instances) != 1 {
		t.Errorf("after recovery: %+v", ev)
	}
}

// next waits for the Instancer's next query and returns it, unanswered.
func (f *fakeConsul) next(t *testing.T) query {
	t.Helper()
	select {
	case q := <-f.queries:
		return q
	case <-time.After(10 * time.Second):
		t.Fatal("no query within 10s")
		return query{}
	}
}

func startInstancer(t *testing.T, f *fakeConsul, opts ...sd.InstancerOption) *sd.Instancer {
	t.Helper()
	started := make(chan *sd.Instancer)
	go func() { started <- newInstancer(t, f, opts...) }()
	f.serve(t, 0, answer{instances: []string{"10.0.0.1:80"}, index: 1})
	s := <-started
	t.Cleanup(s.Stop)
	return s
}

func TestInstancerRateLimitsChurn(t *testing.T) {
	f := newFakeConsul()
	startInstancer(t, f, sd.QueryRate(10, 3))
	// Every answer is a change, at once: churn as fast as Consul can go.
	start := time.Now()
	for i := range 13 {
		q := f.next(t)
		q.reply <- answer{instances: []string{fmt.Sprintf("10.0.0.%d:80", i+2)}, index: q.waitIndex + 1}
	}
	// A burst of 3, then 10 a second: the 13th query no sooner than 1s in.
	if took := time.Since(start); took < 900*time.Millisecond {
		t.Errorf("13 queries in %v: not rate limited", took)
	}
}

func TestInstancerStaleAnswersTooFarBehindAskTheLeader(t *testing.T) {
	f := newFakeConsul()
	s := startInstancer(t, f, sd.WithRead(sd.Read{Mode: sd.ReadStale, MaxStale: time.Second}))
	events := make(chan kitsd.Event, 1)
	s.Register(events)
	nextEvent(t, events)

	q := f.next(t)
	if !q.stale || q.cached {
		t.Fatalf("want a stale, uncached query, have %+v", q)
	}
	// 5s behind a leader that exists: asked again, of the leader, at once.
	q.reply <- answer{instances: []string{"10.0.0.9:80"}, index: 2, lastContact: 5 * time.Second}
	q = f.next(t)
	if q.stale || q.waitIndex != 0 {
		t.Fatalf("re-ask: want a leader query that does not block, have %+v", q)
	}
	q.reply <- answer{instances: []string{"10.0.0.2:80"}, index: 3}
	if ev := nextEvent(t, events); !slices.Equal(ev.Instances, []string{"10.0.0.2:80"}) {
		t.Errorf("want the leader's answer, have %+v", ev)
	}
	// Far behind with no leader at all (quorum lost): the stale answer is
	// the only one, and is used.
	q = f.next(t)
	q.reply <- answer{instances: []string{"10.0.0.3:80"}, index: 4, lastContact: time.Minute, noLeader: true}
	if ev := nextEvent(t, events); ev.Err != nil || !slices.Equal(ev.Instances, []string{"10.0.0.3:80"}) {
		t.Errorf("want the stale answer, have %+v", ev)
	}
}

// By default any server answers (stale reads), and an answer up to
// DefaultMaxStale behind the leader is taken as it is.
func TestInstancerReadsStaleByDefault(t *testing.T) {
	f := newFakeConsul()
	started := make(chan *sd.Instancer)
	go func() { started <- newInstancer(t, f) }()
	q := f.next(t)
	if !q.stale || q.cached {
		t.Errorf("first query: want a stale, uncached query by default, have %+v", q)
	}
	q.reply <- answer{instances: []string{"10.0.0.1:80"}, index: 1}
	s := <-started
	defer s.Stop()
	events := make(chan kitsd.Event, 1)
	s.Register(events)
	nextEvent(t, events)
	q = f.next(t)
	if !q.stale || q.cached {
		t.Fatalf("want a stale, uncached query by default, have %+v", q)
	}
	q.reply <- answer{instances: []string{"10.0.0.2:80"}, index: 2, lastContact: sd.DefaultMaxStale}
	if ev := nextEvent(t, events); !slices.Equal(ev.Instances, []string{"10.0.0.2:80"}) {
		t.Errorf("want the stale answer, DefaultMaxStale behind, have %+v", ev)
	}
	// Further behind than that: asked again, of the leader.
	q = f.next(t)
	q.reply <- answer{instances: []string{"10.0.0.9:80"}, index: 3, lastContact: sd.DefaultMaxStale + time.Second}
	if q = f.next(t); q.stale || q.waitIndex != 0 {
		t.Fatalf("re-ask: want a leader query that does not block, have %+v", q)
	}
	q.reply <- answer{instances: []string{"10.0.0.3:80"}, index: 4}
	if ev := nextEvent(t, events); !slices.Equal(ev.Instances, []string{"10.0.0.3:80"}) {
		t.Errorf("want the leader's answer, have %+v", ev)
	}
}

func TestInstancerReadLeader(t *testing.T) {
	f := newFakeConsul()
	startInstancer(t, f, sd.WithRead(sd.Read{Mode: sd.ReadLeader}))
	q := f.next(t)
	if q.stale || q.cached {
		t.Errorf("want a leader query, neither stale nor cached, have %+v", q)
	}
	// Far behind is not a leader's answer's problem: no second query.
	q.reply <- answer{instances: []string{"10.0.0.2:80"}, index: 2, lastContact: time.Minute}
	if q := f.next(t); q.waitIndex != 2 {
		t.Errorf("want the next blocking query on index 2, have %+v", q)
	}
}

func TestInstancerUseCache(t *testing.T) {
	f := newFakeConsul()
	startInstancer(t, f, sd.WithRead(sd.Read{Mode: sd.ReadCache}))
	if q := f.next(t); !q.cached {
		t.Errorf("want a cached query, have %+v", q)
	}
}

// NewInstancer refuses what cannot work, before it queries anything.
func TestNewInstancerErrors(t *testing.T) {
	f := newFakeConsul() // answers nothing: a query would block the test
	logger := log.NewNopLogger()
	for _, tc := range []struct {
		name    string
		client  sd.Client
		logger  log.Logger
		service string
		tags    []string
		opts    []sd.InstancerOption
	}{
		{"nil client", nil, logger, "trimsvc", nil, nil},
		{"nil logger", f, nil, "trimsvc", nil, nil},
		{"empty service name", f, logger, "", nil, nil},
		{"service name with a slash", f, logger, "trim/svc", nil, nil},
		{"tag with a comma", f, logger, "trimsvc", []string{"a,b"}, nil},
		{"MaxStale with leader reads", f, logger, "trimsvc", nil, []sd.InstancerOption{sd.WithRead(sd.Read{Mode: sd.ReadLeader, MaxStale: time.Second})}},
		{"negative MaxStale", f, logger, "trimsvc", nil, []sd.InstancerOption{sd.WithRead(sd.Read{MaxStale: -time.Second})}},
		{"read mode out of range", f, logger, "trimsvc", nil, []sd.InstancerOption{sd.WithRead(sd.Read{Mode: "fast"})}},
	} {
		s, err := sd.NewInstancerWith(tc.client, tc.logger, tc.service, tc.tags, true, tc.opts...)
		if err == nil {
			s.Stop()
			t.Errorf("%s: want an error", tc.name)
		}
	}
}

// NoInstances says what was searched where, and what the last query said.
func TestInstancerNoInstances(t *testing.T) {
	f := newFakeConsul()
	started := make(chan *sd.Instancer)
	go func() {
		s, err := sd.NewInstancer(f, log.NewNopLogger(), "trimsvc", []string{"blue"}, true)
		if err != nil {
			t.Errorf("NewInstancer: %v", err)
		}
		started <- s
	}()
	f.serve(t, 0, answer{index: 1})
	s := <-started
	defer s.Stop()
	err := s.NoInstances()
	var nie *sd.NoInstancesError
	if !errors.As(err, &nie) {
		t.Fatalf("want an *sd.NoInstancesError, have %T %v", err, err)
	}
	// The fake does not say where it is.
	if nie.Service != "trimsvc" || !slices.Equal(nie.Tags, []string{"blue"}) || nie.Where != "consul" || nie.Discovery != nil {
		t.Errorf("after a successful query: %+v", nie)
	}
	if want, have := `no passing instance of service "trimsvc" with tags ["blue"] in consul: no endpoints available`, err.Error(); want != have {
		t.Errorf("message:\nwant %s\nhave %s", want, have)
	}
	if !errors.Is(err, lb.ErrNoEndpoints) {
		t.Errorf("want errors.Is ErrNoEndpoints: %v", err)
	}
	if want, have := codes.Unavailable, status.Code(err); want != have {
		t.Errorf("status: want %v, have %v", want, have)
	}

	// A failed query is the discovery error.
	events := make(chan kitsd.Event, 1)
	s.Register(events)
	nextEvent(t, events)
	f.serve(t, 1, answer{err: errors.New("connection refused")})
	nextEvent(t, events)
	if !errors.As(s.NoInstances(), &nie) || nie.Discovery == nil || !strings.Contains(nie.Discovery.Error(), "connection refused") {
		t.Fatalf("after a failed query: want its error as Discovery, have %v", s.NoInstances())
	}
	if want, have := `(its last query failed: query consul for trimsvc: connection refused): no endpoints available`, s.NoInstances().Error(); !strings.HasSuffix(have, want) {
		t.Errorf("message: want it to end %q, have %q", want, have)
	}
}

// An Instancer over ConsulConfig.NewClient's client names the agent's
// address.
func TestInstancerNoInstancesNamesTheAgent(t *testing.T) {
	c, err := sd.ConsulConfig{Address: "127.0.0.1:1"}.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	// Nothing listens there: the first query fails at once, and NoInstances
	// says so, the agent first.
	s, err := sd.NewInstancer(c, log.NewNopLogger(), "trimsvc", nil, true)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	var nie *sd.NoInstancesError
	if !errors.As(s.NoInstances(), &nie) || nie.Where != "consul at http://127.0.0.1:1" || nie.Discovery == nil {
		t.Errorf("want an *sd.NoInstancesError in consul at http://127.0.0.1:1 with the query's error, have %v", s.NoInstances())
	}
	if have := s.NoInstances().Error(); !strings.HasPrefix(have, `Consul could not be reached at http://127.0.0.1:1: dial tcp 127.0.0.1:1: `) ||
		!strings.Contains(have, `so no instance of service "trimsvc" is known`) {
		t.Errorf("message: %s", have)
	}
}

// When discovery failed for a reason that is not a missing service, the
// message says that first.
func TestNoInstancesErrorMessages(t *testing.T) {
	for _, tc := range []struct {
		err  *sd.NoInstancesError
		want string
	}{
		{&sd.NoInstancesError{Service: "s", Where: "consul at a:1", Err: lb.ErrNoEndpoints},
			`no passing instance of service "s" in consul at a:1: no endpoints available`},
		{&sd.NoInstancesError{Service: "s", Tags: []string{"x", "y"}, Where: "consul at a:1", Discovery: errors.New("boom"), Err: lb.ErrNoEndpoints},
			`no passing instance of service "s" with tags ["x" "y"] in consul at a:1 (its last query failed: boom): no endpoints available`},
		{&sd.NoInstancesError{Service: "s", Where: "consul's DNS interface at a:53", Err: lb.ErrNoEndpoints},
			`no passing instance of service "s" in consul's DNS interface at a:53: no endpoints available`},
		{&sd.NoInstancesError{Service: "s", Tags: []string{"x"}, Where: "consul at a:1", Discovery: &sd.FilteredError{Service: "s"}, Err: lb.ErrNoEndpoints},
			`consul at a:1: consul filtered the answer by ACLs: the token needs service:read on "s" and node:read on its nodes; so no instance of service "s" with tags ["x"] to call: no endpoints available`},
		{&sd.NoInstancesError{Service: "s", Where: "consul at a:1", Discovery: fmt.Errorf("%w: x", sd.ErrNoLeader), Err: lb.ErrNoEndpoints},
			`consul at a:1: ` + sd.ErrNoLeader.Error() + `: x; so no instance of service "s" to call: no endpoints available`},
	} {
		if have := tc.err.Error(); have != tc.want {
			t.Errorf("\nwant %s\nhave %s", tc.want, have)
		}
		if !errors.Is(tc.err, lb.ErrNoEndpoints) || status.Code(tc.err) != codes.Unavailable {
			t.Errorf("%v: want errors.Is ErrNoEndpoints and Unavailable", tc.err)
		}
	}
}

// A query that fails while the servers have no leader says so. The agent
// forwards the question of the leader to a server, and one that has just
// stopped fails it: the Instancer asks again, and the agent asks another.
func TestInstancerSaysWhenThereIsNoLeader(t *testing.T) {
	for _, tc := range []struct {
		name       string
		queryErr   error
		leaderErrs []error
	}{
		{"the leader question answered at once", errors.New("Unexpected response code: 500 (No cluster leader)"), nil},
		{"the server asked first had just stopped", context.DeadlineExceeded,
			[]error{errors.New("Unexpected response code: 500 (rpc error getting client: failed to get conn: dial tcp 127.0.0.1:8300: connect: connection refused)")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeConsul()
			s := startInstancer(t, f)
			events := make(chan kitsd.Event, 1)
			s.Register(events)
			nextEvent(t, events)
			f.mu.Lock()
			f.leader, f.leaderErrs = "", tc.leaderErrs
			f.mu.Unlock()
			q := f.next(t)
			q.reply <- answer{err: tc.queryErr}
			if ev := nextEvent(t, events); !errors.Is(ev.Err, sd.ErrNoLeader) {
				t.Errorf("want ErrNoLeader, have %v", ev.Err)
			}
		})
	}
}

// The Instancer knows each address's service ID, for load reports; an
// address two instances share names neither.
func TestInstancerServiceID(t *testing.T) {
	f := newFakeConsul()
	started := make(chan *sd.Instancer)
	go func() { started <- newInstancer(t, f) }()
	f.serve(t, 0, answer{instances: []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.2:80"}, index: 10})
	s := <-started
	defer s.Stop()
	if id, ok := sd.ServiceIDOf(s, "10.0.0.1:80"); !ok || id != "10.0.0.1:80#0" {
		t.Errorf("10.0.0.1:80: want its ID, have %q %v", id, ok)
	}
	if id, ok := sd.ServiceIDOf(s, "10.0.0.2:80"); ok {
		t.Errorf("an address two instances share: want no ID, have %q", id)
	}
	if _, ok := sd.ServiceIDOf(s, "10.0.0.3:80"); ok {
		t.Error("an address the catalog does not list has an ID")
	}
	f.serve(t, 10, answer{instances: []string{"10.0.0.3:80"}, index: 11})
	waitFor(t, 5*time.Second, "the new answer's IDs", func() bool { id, ok := sd.ServiceIDOf(s, "10.0.0.3:80"); return ok && id == "10.0.0.3:80#0" })
	if _, ok := sd.ServiceIDOf(s, "10.0.0.1:80"); ok {
		t.Error("an instance gone from the catalog still has an ID")
	}
}

// An Instancer's JSON is its watch's state, for a status page: the last
// index and answer, fresh while its queries succeed; the error, and stale,
// while they fail, with the instances known last kept.
func TestInstancerJSONIsTheWatchState(t *testing.T) {
	f := newFakeConsul()
	started := make(chan *sd.Instancer)
	go func() { started <- newInstancer(t, f) }()
	f.serve(t, 0, answer{instances: []string{"10.0.0.1:80"}, index: 10, lastContact: 3 * time.Millisecond})
	s := <-started
	defer s.Stop()
	type watchJSON struct {
		Service        string     `json:"service"`
		Instances      []string   `json:"instances"`
		LastIndex      uint64     `json:"last_index"`
		LastAnswer     *time.Time `json:"last_answer"`
		BehindLeaderMS float64    `json:"behind_leader_ms"`
		Stale          bool       `json:"stale"`
		Error          string     `json:"error"`
		ErrorSince     *time.Time `json:"error_since"`
	}
	read := func() watchJSON {
		t.Helper()
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var w watchJSON
		if err := json.Unmarshal(b, &w); err != nil {
			t.Fatalf("%v: %s", err, b)
		}
		return w
	}
	w := read()
	if w.Service != "trimsvc" || !slices.Equal(w.Instances, []string{"10.0.0.1:80"}) || w.LastIndex != 10 || w.LastAnswer == nil ||
		w.BehindLeaderMS != 3 || w.Stale || w.Error != "" {
		t.Errorf("after an answer: %+v", w)
	}
	f.serve(t, 10, answer{err: errors.New("boom"), index: 10})
	waitFor(t, 5*time.Second, "the failed query in the JSON", func() bool { return read().Error != "" })
	w = read()
	if !w.Stale || w.ErrorSince == nil || !strings.Contains(w.Error, "boom") || !slices.Equal(w.Instances, []string{"10.0.0.1:80"}) {
		t.Errorf("after a failed query: %+v", w)
	}
}

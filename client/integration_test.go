package client_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/defaults"
	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/internal/proc"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
)

// bins builds the commands the integration tests run, once, when first
// asked.
var bins testenv.Binaries

func TestMain(m *testing.M) { bins.Main(m) }

// cluster starts an agent and n trimsvc instances and waits until all pass.
func cluster(t *testing.T, n int, args ...string) (*testenv.Agent, []*proc.Trimsvc) {
	t.Helper()
	agent := testenv.Consul(t)
	var insts []*proc.Trimsvc
	var ids []string
	for range n {
		inst := testenv.StartTrimsvc(t, bins.Trimsvc(t), agent.HTTPAddr, args...)
		insts = append(insts, inst)
		ids = append(ids, inst.ID)
	}
	agent.WaitPassing("trimsvc", ids...)
	return agent, insts
}

func newClient(t *testing.T, cfg client.Config) *trim.Client {
	t.Helper()
	c, err := trim.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return c
}

// stack is the client's stack built from its pieces, so that a test can
// watch its Instancer and Endpointer.
type stack struct {
	instancer  *sd.Instancer
	endpointer *client.Endpointer
	call       endpoint.Endpoint
}

func newStack(t *testing.T, agent *testenv.Agent) stack {
	t.Helper()
	instancer, err := sd.NewInstancer(sd.NewClient(agent.API()), log.NewNopLogger(), "trimsvc", nil, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(instancer.Stop)
	endpointer := newEndpointer(t, instancer, client.Factory(trim.Endpoints), log.NewNopLogger())
	call, err := client.Retry(client.NewRoundRobin(endpointer), client.RetryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return stack{instancer: instancer, endpointer: endpointer, call: call}
}

// waitEndpoints waits until the endpointer holds n endpoints and returns
// when it saw that: every pick made after that moment is made among them.
func waitEndpoints(t *testing.T, e *client.Endpointer, n int) time.Time {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if eps, _ := e.Endpoints(); len(eps) == n {
			return time.Now()
		}
		if time.Now().After(deadline) {
			eps, _ := e.Endpoints()
			t.Fatalf("endpointer holds %d endpoints after 10s, want %d", len(eps), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitInstances calls until the client has answers from want distinct
// instances, so that its discovery has caught up.
func waitInstances(t *testing.T, e endpoint.Endpoint, want int) {
	t.Helper()
	seen := map[string]bool{}
	deadline := time.Now().Add(10 * time.Second)
	for len(seen) < want {
		if time.Now().After(deadline) {
			t.Fatalf("client saw %d instances within 10s, want %d", len(seen), want)
		}
		resp, err := e(context.Background(), trimsvc.TrimRequest{S: "warm up"})
		if err == nil {
			seen[resp.(trim.TrimResponse).Instance] = true
		}
	}
}

func failures(t *testing.T, calls []loadgen.Call) int {
	t.Helper()
	n := 0
	for _, c := range calls {
		if c.Err != nil {
			if n < 5 {
				t.Logf("failure: %v", c.Err)
			}
			n++
		}
	}
	return n
}

func TestRoundRobinOverThreeInstances(t *testing.T) {
	agent, insts := cluster(t, 3)
	c := newClient(t, client.Config{Consul: sd.ConsulConfig{Address: agent.HTTPAddr}})
	waitInstances(t, c.Endpoint(), 3)

	per := map[string]int{}
	for range 300 {
		resp, err := c.Endpoint()(context.Background(), trimsvc.TrimRequest{S: " a b "})
		if err != nil {
			t.Fatal(err)
		}
		r := resp.(trim.TrimResponse)
		if r.Err != nil || r.S != "ab" {
			t.Fatalf("want ab, have %q (%v)", r.S, r.Err)
		}
		per[r.Instance]++
	}
	for _, inst := range insts {
		if n := per[inst.ID]; n < 90 || n > 110 {
			t.Errorf("%s answered %d of 300, want 100±10", inst.ID, n)
		}
	}
	// The typed Service works too.
	out, err := c.TrimSpace(context.Background(), "x\ty")
	if err != nil || out != "xy" {
		t.Errorf("TrimSpace: %q, %v", out, err)
	}
}

// killAt is e, but the call numbered at (from 1) first SIGKILLs victim.
func killAt(t *testing.T, e endpoint.Endpoint, at int64, victim *proc.Trimsvc) endpoint.Endpoint {
	var (
		n    atomic.Int64
		once sync.Once
	)
	return func(ctx context.Context, req interface{}) (interface{}, error) {
		if n.Add(1) == at {
			once.Do(func() {
				if err := victim.Signal(syscall.SIGKILL); err != nil {
					t.Error(err)
				}
			})
		}
		return e(ctx, req)
	}
}

func TestSIGKILLDuringLoadNoFailures(t *testing.T) {
	agent, insts := cluster(t, 3)
	c := newClient(t, client.Config{Consul: sd.ConsulConfig{Address: agent.HTTPAddr}})
	waitInstances(t, c.Endpoint(), 3)

	calls, _ := loadgen.Start(context.Background(), killAt(t, c.Endpoint(), 300, insts[0]), "l o a d", loadgen.Options{Callers: 8, N: 2000}).Wait()
	if want, have := 0, failures(t, calls); want != have {
		t.Errorf("failures: want %d, have %d of %d", want, have, len(calls))
	}
	if want, have := 2000, len(calls); want != have {
		t.Errorf("requests: want %d, have %d", want, have)
	}
	select {
	case <-insts[0].Exited():
	default:
		t.Error("the victim was not killed during the load")
	}
}

func TestConsulStoppedDuringLoadNoFailures(t *testing.T) {
	agent, _ := cluster(t, 3)
	s := newStack(t, agent)
	waitInstances(t, s.call, 3)
	events := make(chan kitsd.Event, 1)
	s.instancer.Register(events)
	<-events // the current state
	defer s.instancer.Deregister(events)

	if err := agent.Stop(); err != nil {
		t.Fatal(err)
	}
	// Only once the Instancer has reported Consul gone does the load start,
	// so every call provably runs while Consul is down.
	select {
	case ev := <-events:
		if ev.Err == nil {
			t.Fatalf("want the Instancer to report an error, have %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the Instancer reported nothing within 10s of Consul stopping")
	}
	calls, _ := loadgen.Start(context.Background(), s.call, "l o a d", loadgen.Options{Callers: 8, N: 1000}).Wait()
	if want, have := 0, failures(t, calls); want != have {
		t.Errorf("failures: want %d, have %d of %d", want, have, len(calls))
	}
	per := map[string]int{}
	for _, c := range calls {
		per[c.Instance]++
	}
	if want, have := 3, len(per); want != have {
		t.Errorf("with consul down: want the 3 known instances answering, have %v", per)
	}
	seen := make(chan kitsd.Event, 1)
	s.instancer.Register(seen) // the current state, at once
	s.instancer.Deregister(seen)
	if st := <-seen; st.Err == nil {
		t.Errorf("Consul came back during the load? state %+v", st)
	}
}

func TestJoinAndLeaveDuringLoad(t *testing.T) {
	agent, insts := cluster(t, 2)
	s := newStack(t, agent)
	waitInstances(t, s.call, 2)
	load := loadgen.Start(context.Background(), s.call, "x", loadgen.Options{Callers: 4})

	joined := testenv.StartTrimsvc(t, bins.Trimsvc(t), agent.HTTPAddr)
	passingAt := agent.WaitPassing("trimsvc", insts[0].ID, insts[1].ID, joined.ID)
	waitEndpoints(t, s.endpointer, 3)

	if err := insts[0].Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	goneAt := waitEndpoints(t, s.endpointer, 2)
	// Some load on what remains.
	sinceGone := loadgen.Start(context.Background(), s.call, "x", loadgen.Options{Callers: 1, N: 200})
	after, _ := sinceGone.Wait()
	calls, _ := load.Stop()
	calls = append(calls, after...)

	if want, have := 0, failures(t, calls); want != have {
		t.Errorf("failures: want %d, have %d of %d", want, have, len(calls))
	}
	var firstJoined time.Time
	late := 0
	for _, c := range calls {
		if c.Instance == joined.ID && (firstJoined.IsZero() || c.Start.Before(firstJoined)) {
			firstJoined = c.Start
		}
		// Once the endpointer has dropped the instance, no call that
		// starts can pick it.
		if c.Instance == insts[0].ID && c.Start.After(goneAt) {
			late++
		}
	}
	if firstJoined.IsZero() {
		t.Fatal("the new instance never answered")
	}
	t.Logf("new instance answered %v after it was seen passing; %d requests in all", firstJoined.Sub(passingAt).Round(time.Millisecond), len(calls))
	if late > 0 {
		t.Errorf("%d requests started after the endpointer dropped %s reached it", late, insts[0].ID)
	}
}

var invalidArgumentRE = regexp.MustCompile(`trimsvc_requests_total\{code="InvalidArgument",method="TrimSpace"\} (\d+)`)

func TestOversizeInputIsOneAttempt(t *testing.T) {
	agent, insts := cluster(t, 3, "-http-addr", "127.0.0.1:0", "-max-input-bytes", "16")
	c := newClient(t, client.Config{Consul: sd.ConsulConfig{Address: agent.HTTPAddr}})
	waitInstances(t, c.Endpoint(), 3)

	_, err := c.TrimSpace(context.Background(), strings.Repeat("x", 17))
	if !errors.Is(err, trimsvc.ErrInputTooLarge) {
		t.Fatalf("want ErrInputTooLarge, have %v", err)
	}
	if want, have := codes.InvalidArgument, status.Code(err); want != have {
		t.Errorf("want %v, have %v", want, have)
	}
	total := 0
	for _, inst := range insts {
		resp, err := http.Get("http://" + inst.HTTPAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if m := invalidArgumentRE.FindSubmatch(body); m != nil {
			n, _ := strconv.Atoi(string(m[1]))
			total += n
		}
	}
	if want, have := 1, total; want != have {
		t.Errorf("InvalidArgument requests reaching servers: want %d, have %d", want, have)
	}
}

func TestNoInstancesNamesWhatWasSearched(t *testing.T) {
	agent := testenv.Consul(t)
	c := newClient(t, client.Config{Consul: sd.ConsulConfig{Address: agent.HTTPAddr}, Service: "absent", Tags: []string{"blue", "v2"},
		CallConfig: client.CallConfig{Retry: client.RetryConfig{Timeout: 300 * time.Millisecond}}})
	_, err := c.TrimSpace(context.Background(), "x")
	if err == nil {
		t.Fatal("want error")
	}
	for _, want := range []string{`"absent"`, `"blue"`, `"v2"`, agent.HTTPAddr} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %s", err, want)
		}
	}
	if !errors.Is(err, lb.ErrNoEndpoints) {
		t.Errorf("want errors.Is ErrNoEndpoints: %v", err)
	}
	var nie *sd.NoInstancesError
	if !errors.As(err, &nie) {
		t.Errorf("want *sd.NoInstancesError, have %T", err)
	} else {
		if nie.Service != "absent" || !slices.Equal(nie.Tags, []string{"blue", "v2"}) ||
			!strings.HasPrefix(nie.Where, "consul at ") || !strings.Contains(nie.Where, agent.HTTPAddr) || nie.Discovery != nil {
			t.Errorf("NoInstancesError: want service absent, tags [blue v2], consul at %s, no discovery error; have %+v", agent.HTTPAddr, nie)
		}
	}
	var re *client.RetryError
	if !errors.As(err, &re) || re.Attempts != defaults.MaxAttempts {
		t.Errorf("want %d attempts within the 300ms, have %#v", defaults.MaxAttempts, re)
	}
	if want, have := codes.Unavailable, status.Code(err); want != have {
		t.Errorf("want %v, have %v", want, have)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg   client.Config
		field string
	}{
		{client.Config{CallConfig: client.CallConfig{Retry: client.RetryConfig{MaxAttempts: -1}}}, "Retry.MaxAttempts"},
		{client.Config{CallConfig: client.CallConfig{Retry: client.RetryConfig{Timeout: -time.Second}}}, "Retry.Timeout"},
		{client.Config{CallConfig: client.CallConfig{Balancer: "random"}}, "Balancer"},
		{client.Config{CallConfig: client.CallConfig{TLS: client.TLS{CertFile: "c.pem", KeyFile: "k.pem"}}}, "TLS.CAFile"},
		{client.Config{Read: sd.Read{Mode: sd.ReadLeader, MaxStale: time.Second}}, "Read"},
		{client.Config{Datacenters: []string{"dc1", "dc1"}}, "Datacenters"},
		{client.Config{Datacenters: []string{"dc1", ""}}, "Datacenters"},
		{client.Config{Datacenters: []string{"dc1", "dc?2"}}, "Datacenters"},
		{client.Config{Datacenters: []string{"dc1"}, Discovery: client.DiscoveryDNS}, "Datacenters"},
		{client.Config{Datacenters: []string{"dc1", "dc2"}, CallConfig: client.CallConfig{EndpointerConfig: client.EndpointerConfig{Subset: 3}}}, "Subset"},
		{client.Config{Datacenters: []string{"dc1", "dc2"}, Overprovisioning: 0.9}, "Overprovisioning"},
		{client.Config{Discovery: client.DiscoveryQuery, Tags: []string{"v2"}}, "Tags"},
		{client.Config{Discovery: client.DiscoveryQuery, Datacenters: []string{"dc2"}}, "Datacenters"},
		{client.Config{Query: "failover"}, "Query"},
	} {
		_, err := trim.NewClient(tc.cfg)
		var fe *client.FieldError
		if !errors.As(err, &fe) {
			t.Errorf("%+v: want a *FieldError, have %v", tc.cfg, err)
		} else if fe.Field != tc.field {
			t.Errorf("%+v: want a *FieldError for %s, have %v", tc.cfg, tc.field, err)
		}
	}
	// client.New calls the service cfg names: it has no default.
	_, err := client.New(client.Config{}, trim.Endpoints)
	var fe *client.FieldError
	if !errors.As(err, &fe) || fe.Field != "Service" {
		t.Errorf("client.New without a Service: want a *FieldError for Service, have %v", err)
	}
}

func TestCloseLeaksNothing(t *testing.T) {
	agent, _ := cluster(t, 2)
	opts := []goleak.Option{goleak.IgnoreCurrent()}

	c, err := trim.NewClient(client.Config{Consul: sd.ConsulConfig{Address: agent.HTTPAddr}})
	if err != nil {
		t.Fatal(err)
	}
	// The Instancer is in its blocking query once the first answer is in.
	waitInstances(t, c.Endpoint(), 2)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	goleak.VerifyNone(t, opts...)
}

func TestCloseLeaksNothingWhileConsulDown(t *testing.T) {
	agent := testenv.Consul(t)
	if err := agent.Stop(); err != nil {
		t.Fatal(err)
	}
	opts := []goleak.Option{goleak.IgnoreCurrent()}
	c, err := trim.NewClient(client.Config{Consul: sd.ConsulConfig{Address: agent.HTTPAddr}})
	if err != nil {
		t.Fatal(err)
	}
	// Its first query failed; the watch is retrying with backoff.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, opts...)
}

// TestClientsShareOneWatch checks that the clients of one service in a
// process share one Consul watch, that a client of other tags has its own,
// and that the last Close stops it, leaving nothing behind.
func TestClientsShareOneWatch(t *testing.T) {
	agent, _ := cluster(t, 2)
	leaks := goleak.IgnoreCurrent()
	watches := newWatchCounter(t, agent.HTTPAddr)
	pool := &sd.Instancers{}
	cfg := client.Config{Consul: sd.ConsulConfig{Address: watches.addr()}}
	var clients []*trim.Client
	for _, tags := range [][]string{nil, nil, {"other"}} {
		cfg.Tags = tags
		c, err := trim.NewClient(cfg, client.WithInstancers(pool))
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	if n := watches.settle(2); n != 2 {
		t.Fatalf("3 clients, two of them of the same service and tags: %d watches, want 2", n)
	}
	for _, c := range clients[:2] {
		waitInstances(t, c.Endpoint(), 2)
	}
	for i, want := range []int64{2, 1, 0} {
		if err := clients[i].Close(); err != nil {
			t.Fatal(err)
		}
		if n := watches.settle(want); n != want {
			t.Fatalf("after %d of 3 clients closed: %d watches, want %d", i+1, n, want)
		}
	}
	watches.srv.Close()
	goleak.VerifyNone(t, leaks)
}

// watchCounter is a proxy in front of a Consul agent that counts the
// blocking health queries in flight through it: one per watch, since a
// watch keeps one open between changes.
type watchCounter struct {
	srv      *httptest.Server
	inflight atomic.Int64
}

func newWatchCounter(t *testing.T, agentAddr string) *watchCounter {
	t.Helper()
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: agentAddr})
	w := &watchCounter{}
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/health/service/") && r.URL.Query().Get("index") != "" {
			w.inflight.Add(1)
			defer w.inflight.Add(-1)
		}
		proxy.ServeHTTP(rw, r)
	}))
	t.Cleanup(w.srv.Close)
	return w
}

func (w *watchCounter) addr() string { return w.srv.Listener.Addr().String() }

// settle waits up to 10s for want blocking queries in flight, and returns
// how many there are then.
func (w *watchCounter) settle(want int64) int64 {
	deadline := time.Now().Add(10 * time.Second)
	for w.inflight.Load() != want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	// A watch answered meanwhile reopens its query at once: look again
	// after a moment, so that a count passing through want is not taken.
	time.Sleep(100 * time.Millisecond)
	return w.inflight.Load()
}

package sd_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/internal/consulname"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/sd"
)

func validRegistration() sd.Registration {
	return sd.Registration{
		ID: "trimsvc-1", Name: "trimsvc", Tags: []string{"a"}, Address: "127.0.0.1", Port: 9999,
		CheckInterval: time.Second, DeregisterAfter: time.Minute,
	}
}

func TestNewRegistrarValidates(t *testing.T) {
	f := newFakeConsul()
	for name, mutate := range map[string]func(*sd.Registration){
		"no name":         func(r *sd.Registration) { r.Name = "" },
		"no address":      func(r *sd.Registration) { r.Address = "" },
		"port 0":          func(r *sd.Registration) { r.Port = 0 },
		"port too large":  func(r *sd.Registration) { r.Port = 70000 },
		"neg. interval":   func(r *sd.Registration) { r.CheckInterval = -time.Second },
		"neg. timeout":    func(r *sd.Registration) { r.CheckTimeout = -time.Second },
		"neg. deregister": func(r *sd.Registration) { r.DeregisterAfter = -time.Minute },
		"HTTP and gRPC":   func(r *sd.Registration) { r.CheckHTTPPath = "/healthz"; r.HealthService = "pb.Trim" },
		"relative path":   func(r *sd.Registration) { r.CheckHTTPPath = "health" },
		"id with a path":  func(r *sd.Registration) { r.ID = "x/../trimsvc-2" },
		"id ..":           func(r *sd.Registration) { r.ID = ".." },
		"name with /":     func(r *sd.Registration) { r.Name = "a/b" },
		"tag with space":  func(r *sd.Registration) { r.Tags = []string{"a b"} },
		"meta key":        func(r *sd.Registration) { r.Meta = map[string]string{"consul-x": "1"} },
	} {
		reg := validRegistration()
		mutate(&reg)
		if _, err := sd.NewRegistrar(f, reg, log.NewNopLogger()); err == nil {
			t.Errorf("%s: want error, have nil", name)
		}
	}
	if _, err := sd.NewRegistrar(f, validRegistration(), log.NewNopLogger()); err != nil {
		t.Errorf("valid registration: %v", err)
	}
	// One convention across trimkit: errors, not panics.
	if _, err := sd.NewRegistrar(nil, validRegistration(), log.NewNopLogger()); err == nil {
		t.Error("nil client: want an error")
	}
	if _, err := sd.NewRegistrar(f, validRegistration(), nil); err == nil {
		t.Error("nil logger: want an error")
	}
}

// The zero ID, check interval and deregister-after are defaults, and the
// Registrar, its Definition and CheckID all use them.
func TestRegistrationDefaults(t *testing.T) {
	reg := sd.Registration{Name: "trimsvc", Address: "10.0.0.1", Port: 8975}
	if want, have := "trimsvc-10.0.0.1-8975", reg.WithDefaults().ID; want != have {
		t.Errorf("default ID: want %s, have %s", want, have)
	}
	r, err := sd.NewRegistrar(newFakeConsul(), reg, log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	have := r.Registration()
	want := sd.Registration{ID: "trimsvc-10.0.0.1-8975", Name: "trimsvc", Address: "10.0.0.1", Port: 8975,
		CheckInterval: sd.DefaultCheckInterval, DeregisterAfter: sd.DefaultDeregisterAfter}
	if want.ID != have.ID || want.CheckInterval != have.CheckInterval || want.DeregisterAfter != have.DeregisterAfter {
		t.Errorf("want %+v, have %+v", want, have)
	}
	if want, have := "service:trimsvc-10.0.0.1-8975", reg.CheckID(); want != have {
		t.Errorf("CheckID: want %s, have %s", want, have)
	}
	def, err := reg.Definition()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"id": "trimsvc-10.0.0.1-8975"`, `"interval": "10s"`, `"timeout": "2s"`, `"deregister_critical_service_after": "1m0s"`, `"grpc": "10.0.0.1:8975"`} {
		if !strings.Contains(string(def), want) {
			t.Errorf("definition lacks %s:\n%s", want, def)
		}
	}
	reg.HealthService = "pb.Trim"
	if def, err = reg.Definition(); err != nil || !strings.Contains(string(def), `"grpc": "10.0.0.1:8975/pb.Trim"`) {
		t.Errorf("definition with a health service (%v):\n%s", err, def)
	}
	if strings.Contains(string(def), "locality") {
		t.Errorf("definition without a locality has one:\n%s", def)
	}
	reg.Region, reg.Zone = "us-east-1", "us-east-1a"
	if def, err = reg.Definition(); err != nil || !strings.Contains(string(def), `"zone": "us-east-1a"`) || !strings.Contains(string(def), `"region": "us-east-1"`) {
		t.Errorf("definition with a locality (%v):\n%s", err, def)
	}
}

// An ID that would need escaping in a URL path never reaches one: the
// Registrar refuses it, and so does the client underneath, so that
// "x/../trimsvc-2" cannot deregister trimsvc-2.
func TestPathUnsafeIDsNeverReachConsul(t *testing.T) {
	agent := testenv.Consul(t)
	c := agent.API()
	sibling := validRegistration()
	sibling.ID = "trimsvc-2"
	r, err := sd.NewRegistrar(sd.NewClient(c), sibling, log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := r.Register(ctx); err != nil {
		t.Fatal(err)
	}
	client := sd.NewClient(c)
	for _, id := range []string{"x/../trimsvc-2", "..", "trimsvc-2?x", "a%2Fb"} {
		if err := client.Deregister(ctx, id); err == nil {
			t.Errorf("Deregister(%q): want an error", id)
		}
		if _, err := client.AgentService(ctx, id); err == nil || strings.Contains(err.Error(), "404") {
			t.Errorf("AgentService(%q): want it refused before Consul, have %v", id, err)
		}
		if err := client.Register(ctx, &api.AgentServiceRegistration{ID: id, Name: "trimsvc"}); err == nil {
			t.Errorf("Register(%q): want an error", id)
		}
	}
	if _, _, err := client.Service(ctx, "x/../y", nil, true, nil); err == nil {
		t.Error(`Service("x/../y"): want an error`)
	}
	if ok, err := r.Registered(ctx); !ok || err != nil {
		t.Errorf("the sibling: want it still registered, have %v (%v)", ok, err)
	}
}

func TestValidNames(t *testing.T) {
	for _, tc := range []struct {
		check func(string) error
		ok    []string
		bad   []string
	}{
		{consulname.ValidServiceName, []string{"trimsvc", "a", "orders-v2"}, []string{"", "a/b", "-a", "a-", "a_b", "a.b", strings.Repeat("a", 64)}},
		{consulname.ValidServiceID, []string{"trimsvc-127.0.0.1-8975", "trimsvc-::1-80", "x_y", "[::1]"}, []string{"", ".", "..", "x/../y", "a b", "a%2F", "a?b", "a#b", strings.Repeat("a", 257)}},
		{consulname.ValidTag, []string{"v1", "env=prod", "a/b"}, []string{"", "a b", "a,b", "a\tb"}},
		{consulname.ValidMetaKey, []string{"version", "a_b-c"}, []string{"", "consul-x", "a.b", "a b"}},
	} {
		for _, s := range tc.ok {
			if err := tc.check(s); err != nil {
				t.Errorf("%q: %v", s, err)
			}
		}
		for _, s := range tc.bad {
			if err := tc.check(s); err == nil {
				t.Errorf("%q: want an error", s)
			}
		}
	}
}

func TestRegisterDeregister(t *testing.T) {
	agent := testenv.Consul(t)
	c := agent.API()
	r, err := sd.NewRegistrar(sd.NewClient(c), validRegistration(), log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := r.Register(ctx); err != nil {
		t.Fatal(err)
	}
	svc, _, err := c.Agent().Service("trimsvc-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want, have := "127.0.0.1:9999", net.JoinHostPort(svc.Address, "9999"); want != have || svc.Port != 9999 {
		t.Errorf("address: want %s, have %s:%d", want, svc.Address, svc.Port)
	}
	// The api package drops Interval and Timeout from AgentCheck; read them
	// from the agent's JSON.
	var checks map[string]struct{ Type, Interval, Timeout string }
	if _, err := c.Raw().Query("/v1/agent/checks", &checks, nil); err != nil {
		t.Fatal(err)
	}
	chk, ok := checks["service:trimsvc-1"]
	if !ok {
		t.Fatalf("no check service:trimsvc-1 in %v", checks)
	}
	if want, have := (struct{ Type, Interval, Timeout string }{"grpc", "1s", "1s"}), chk; want != have {
		t.Errorf("check: want %+v, have %+v", want, have)
	}
	if ok, err := r.Registered(ctx); !ok || err != nil {
		t.Errorf("Registered: want true, have %v (%v)", ok, err)
	}
	if err := r.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, err := r.Registered(ctx); ok || err != nil {
		t.Errorf("Registered after Deregister: want false, have %v (%v)", ok, err)
	}
	// Nothing left to remove is not an error (the agent answers 404).
	if err := r.Deregister(ctx); err != nil {
		t.Errorf("Deregister of an instance the agent does not hold: %v", err)
	}
}

func TestHTTPCheck(t *testing.T) {
	agent := testenv.Consul(t)
	c := agent.API()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	reg := sd.Registration{ID: "manager-1", Name: "manager", Address: host, Port: p, CheckInterval: 200 * time.Millisecond,
		CheckHTTPPath: "/healthz", DeregisterAfter: time.Minute}
	r, err := sd.NewRegistrar(sd.NewClient(c), reg, log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Register(context.Background()); err != nil {
		t.Fatal(err)
	}
	agent.WaitPassing("manager", "manager-1")
	checks, err := c.Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	if chk := checks[reg.CheckID()]; chk == nil || chk.Type != "http" {
		t.Errorf("check %s = %+v, want an http check", reg.CheckID(), chk)
	}
	def, err := reg.Definition()
	if err != nil {
		t.Fatal(err)
	}
	if want := `"http": "http://` + srv.Listener.Addr().String() + `/healthz"`; !strings.Contains(string(def), want) || strings.Contains(string(def), "grpc") {
		t.Errorf("definition lacks %s, or names gRPC:\n%s", want, def)
	}
}

func TestRegisterGivesUpNamingAddress(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	cfg := api.DefaultConfig()
	cfg.Address = addr
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := sd.NewRegistrar(sd.NewClient(c), validRegistration(), log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	err = r.Register(ctx)
	if err == nil {
		t.Fatal("want error, have nil")
	}
	for _, want := range []string{addr, "gave up registering", "connection refused"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestRegisterRetriesUntilTheAgentAnswers(t *testing.T) {
	f := newFakeConsul()
	f.registerErrs = []error{errors.New("connection refused"), errors.New("connection refused")}
	r, err := sd.NewRegistrar(f, validRegistration(), log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Register(ctx); err != nil {
		t.Fatalf("registration after two failures: %v", err)
	}
	if want, have := 3, f.registers; want != have {
		t.Errorf("attempts: want %d, have %d", want, have)
	}
	if ok, err := r.Registered(context.Background()); !ok || err != nil {
		t.Errorf("Registered: %v (%v)", ok, err)
	}
}

func TestKeepRegistered(t *testing.T) {
	agent := testenv.Consul(t)
	r, err := sd.NewRegistrar(sd.NewClient(agent.API()), validRegistration(), log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := r.Register(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.KeepRegistered(ctx, 200*time.Millisecond) }()

	agent.Restart() // forgets the service
	waitFor(t, 5*time.Second, "registered again after the agent restarted", func() bool {
		ok, _ := r.Registered(context.Background())
		return ok
	})

	// Once KeepRegistered has returned, nothing brings the service back.
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("KeepRegistered: %v", err)
	}
	if err := r.Deregister(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ok, err := r.Registered(context.Background()); ok || err != nil {
		t.Errorf("registered after KeepRegistered stopped: %v (%v)", ok, err)
	}
	if err := r.KeepRegistered(context.Background(), 0); err == nil {
		t.Error("interval 0: want error")
	}
}

// KeepRegistered registers again what the agent lost, without a real agent
// restart: the fake forgets the service after its first registration, and
// only a second registration brings it back.
func TestKeepRegisteredRestoresWhatTheAgentLost(t *testing.T) {
	f := newFakeConsul()
	reg := validRegistration()
	r, err := sd.NewRegistrar(f, reg, log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := r.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.Deregister(ctx, reg.ID); err != nil { // the agent lost it
		t.Fatal(err)
	}
	if ok, _ := r.Registered(ctx); ok {
		t.Fatal("registered after the agent lost it")
	}
	done := make(chan error, 1)
	go func() { done <- r.KeepRegistered(ctx, 10*time.Millisecond) }()
	waitFor(t, 5*time.Second, "registered again", func() bool {
		ok, _ := r.Registered(ctx)
		return ok
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("KeepRegistered: %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if want, have := 2, f.registers; want != have {
		t.Errorf("registrations: want %d (the first, and the one after the loss), have %d", want, have)
	}
}

// apiRegistration is a plain registration without a check, passing at once.
type apiRegistration struct {
	id, name string
	tags     []string
	address  string
	port     int
}

func (r apiRegistration) toAPI() *api.AgentServiceRegistration {
	return &api.AgentServiceRegistration{ID: r.id, Name: r.name, Tags: r.tags, Address: r.address, Port: r.port}
}

// What Register sends carries the defaults and the health service, to the
// fake (which keeps the registration whole: the agent does not show a
// check's target) and to a real agent.
func TestRegisterSendsDefaults(t *testing.T) {
	reg := sd.Registration{Name: "trimsvc", Address: "127.0.0.1", Port: 9999, HealthService: "pb.Trim"}
	id := sd.Registration{Name: "trimsvc", Address: "127.0.0.1", Port: 9999}.WithDefaults().ID
	f := newFakeConsul()
	r, err := sd.NewRegistrar(f, reg, log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Register(context.Background()); err != nil {
		t.Fatal(err)
	}
	sent := f.services[id]
	if sent == nil {
		t.Fatalf("nothing registered as %s: %v", id, f.services)
	}
	if want, have := "127.0.0.1:9999/pb.Trim 10s 2s 1m0s", fmt.Sprint(sent.Check.GRPC, " ", sent.Check.Interval, " ", sent.Check.Timeout, " ", sent.Check.DeregisterCriticalServiceAfter); want != have {
		t.Errorf("check: want %s, have %s", want, have)
	}

	agent := testenv.Consul(t)
	c := agent.API()
	if r, err = sd.NewRegistrar(sd.NewClient(c), reg, log.NewNopLogger()); err != nil {
		t.Fatal(err)
	}
	if err := r.Register(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ok, err := r.Registered(context.Background()); !ok || err != nil {
		t.Fatalf("registered as %s: %v (%v)", id, ok, err)
	}
	var checks map[string]struct{ Type, Name, Interval, Timeout string }
	if _, err := c.Raw().Query("/v1/agent/checks", &checks, nil); err != nil {
		t.Fatal(err)
	}
	chk, ok := checks[reg.CheckID()]
	if !ok {
		t.Fatalf("no check %s in %v", reg.CheckID(), checks)
	}
	if want, have := "grpc/gRPC health 127.0.0.1:9999/pb.Trim/10s/2s", strings.Join([]string{chk.Type, chk.Name, chk.Interval, chk.Timeout}, "/"); want != have {
		t.Errorf("check: want %s, have %s", want, have)
	}
}

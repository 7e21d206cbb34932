package grpcserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/sd"
)

// fixture is an Instance of service name serving the echo handler on a
// free port, registered (once Run registers it) with the agent, and a
// connection to it.
type fixture struct {
	in   *Instance
	grpc *grpc.Server
	conn *grpc.ClientConn
	id   string
}

func newFixture(t *testing.T, agent *testenv.Agent, client sd.Client, reg sd.Registration, handler func(context.Context, *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error)) *fixture {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	s := grpc.NewServer()
	t.Cleanup(s.Stop)
	if handler == nil {
		handler = func(_ context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) { return in, nil }
	}
	s.RegisterService(echoDesc(handler), nil)
	reg.Address, reg.Port = "127.0.0.1", lis.Addr().(*net.TCPAddr).Port
	reg.CheckInterval = time.Second // Consul's shortest
	if client == nil {
		client = sd.NewClient(agent.API())
	}
	r, err := sd.NewRegistrar(client, reg, log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &fixture{
		in:   &Instance{Server: s, Listener: lis, Registrar: r, Drain: time.Nanosecond, Logger: log.NewNopLogger()},
		grpc: s, conn: conn, id: r.Registration().ID,
	}
}

// run runs the instance until the test cancels it or ends; done gives
// Run's error.
func (f *fixture) run(t *testing.T) (cancel func(), done <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch, returned := make(chan error, 1), make(chan struct{})
	go func() {
		ch <- f.in.Run(ctx)
		close(returned)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-returned:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10s of its context's end")
		}
	})
	return cancel, ch
}

// status is the health status of name, or the error of asking.
func (f *fixture) status(name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(f.conn).Check(ctx, &healthpb.HealthCheckRequest{Service: name})
	if err != nil {
		return err.Error()
	}
	return resp.GetStatus().String()
}

func registered(c *api.Client, id string) bool {
	services, err := c.Agent().Services()
	_, ok := services[id]
	return err == nil && ok
}

func wait(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s")
		return nil
	}
}

// TestInstance runs every lifecycle test against one Consul agent, each
// under a service name of its own.
func TestInstance(t *testing.T) {
	agent := testenv.Consul(t)
	c := agent.API()

	// Ready gates health and registration; then the instance is
	// registered with a passing check on the health service, and on ctx's
	// end it goes NOT_SERVING, deregisters, serves a call in flight
	// through the drain and returns nil.
	t.Run("Lifecycle", func(t *testing.T) {
		t.Parallel()
		entered, release := make(chan struct{}, 1), make(chan struct{})
		f := newFixture(t, agent, nil, sd.Registration{Name: "lifecycle", HealthService: "test.Echo"},
			func(_ context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
				if string(in.GetValue()) == "hold" {
					entered <- struct{}{}
					<-release
				}
				return in, nil
			})
		ready := make(chan struct{})
		f.in.Ready = func(ctx context.Context) error {
			select {
			case <-ready:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		f.in.Drain = 2 * time.Second
		cancel, done := f.run(t)

		eventually(t, "serving health checks", func() bool { return f.status("") == "NOT_SERVING" })
		if want, have := "NOT_SERVING", f.status("test.Echo"); want != have {
			t.Errorf("health of test.Echo before Ready: want %s, have %s", want, have)
		}
		if registered(c, f.id) {
			t.Fatal("registered before Ready returned")
		}

		close(ready)
		agent.WaitPassing("lifecycle", f.id)
		for _, name := range []string{"", "test.Echo"} {
			if want, have := "SERVING", f.status(name); want != have {
				t.Errorf("health of %q once ready: want %s, have %s", name, want, have)
			}
		}

		ctx := context.Background()
		held := make(chan error, 1)
		go func() { held <- echo(ctx, f.conn, []byte("hold")) }()
		<-entered
		cancel()
		eventually(t, "deregistered", func() bool { return !registered(c, f.id) })
		for _, name := range []string{"", "test.Echo"} {
			if want, have := "NOT_SERVING", f.status(name); want != have {
				t.Errorf("health of %q while draining: want %s, have %s", name, want, have)
			}
		}
		// Still serving through the drain: a new call and the one in
		// flight both complete.
		if err := echo(ctx, f.conn, []byte("new")); err != nil {
			t.Errorf("a call during the drain: %v", err)
		}
		select {
		case err := <-done:
			t.Fatalf("Run returned (%v) with a call in flight", err)
		default:
		}
		close(release)
		if err := <-held; err != nil {
			t.Errorf("the call in flight: %v", err)
		}
		if err := wait(t, done); err != nil {
			t.Errorf("Run after a clean stop: %v", err)
		}
	})

	// Consul's check asks about HealthService: that name NOT_SERVING turns
	// it critical while "" still says SERVING.
	t.Run("CheckAsksHealthService", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, agent, nil, sd.Registration{Name: "named", HealthService: "test.Echo"}, nil)
		hs := health.NewServer()
		f.in.Health = hs
		f.run(t)
		agent.WaitPassing("named", f.id)
		hs.SetServingStatus("test.Echo", healthpb.HealthCheckResponse_NOT_SERVING)
		agent.WaitPassing("named")
		if want, have := "SERVING", f.status(""); want != have {
			t.Errorf(`health of "": want %s, have %s`, want, have)
		}
		hs.SetServingStatus("test.Echo", healthpb.HealthCheckResponse_SERVING)
		agent.WaitPassing("named", f.id)
	})

	// KeepRegistered is stopped, and waited for, before Deregister: even
	// resyncing every millisecond, no instance is left in the agent.
	t.Run("NoResyncAfterDeregister", func(t *testing.T) {
		t.Parallel()
		for i := range 20 {
			f := newFixture(t, agent, nil, sd.Registration{Name: "resync"}, nil)
			f.in.ResyncInterval = time.Millisecond
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- f.in.Run(ctx) }()
			eventually(t, "registered", func() bool { return registered(c, f.id) })
			cancel()
			if err := wait(t, done); err != nil {
				t.Fatalf("round %d: %v", i, err)
			}
			if registered(c, f.id) {
				t.Fatalf("round %d: still registered after Run returned", i)
			}
		}
	})

	// A Background task's error ends the instance, which leaves Consul;
	// Run returns that error.
	t.Run("BackgroundFailure", func(t *testing.T) {
		t.Parallel()
		errBoom := errors.New("boom")
		f := newFixture(t, agent, nil, sd.Registration{Name: "background"}, nil)
		fail := make(chan struct{})
		stopped := make(chan struct{})
		f.in.Background = []func(context.Context) error{
			func(ctx context.Context) error {
				select {
				case <-fail:
					return errBoom
				case <-ctx.Done():
					return ctx.Err()
				}
			},
			func(ctx context.Context) error { // stopped, and waited for
				<-ctx.Done()
				close(stopped)
				return ctx.Err()
			},
		}
		_, done := f.run(t)
		eventually(t, "registered", func() bool { return registered(c, f.id) })
		close(fail)
		err := wait(t, done)
		if !errors.Is(err, errBoom) {
			t.Errorf("want %v, have %v", errBoom, err)
		}
		if errors.Is(err, context.Canceled) {
			t.Errorf("the other task's ctx error was reported: %v", err)
		}
		select {
		case <-stopped:
		default:
			t.Error("Run returned before the other task did")
		}
		if registered(c, f.id) {
			t.Error("still registered")
		}
	})

	// A deregistration that fails is Run's error.
	t.Run("FailedDeregistration", func(t *testing.T) {
		t.Parallel()
		consul, err := sd.ConsulConfig{Address: agent.HTTPAddr}.NewClient()
		if err != nil {
			t.Fatal(err)
		}
		f := newFixture(t, agent, failingDeregister{consul.(addressed)}, sd.Registration{Name: "stuck"}, nil)
		t.Cleanup(func() { _ = c.Agent().ServiceDeregister(f.id) })
		cancel, done := f.run(t)
		eventually(t, "registered", func() bool { return registered(c, f.id) })
		cancel()
		err = wait(t, done)
		if err == nil || !strings.Contains(err.Error(), "agent unreachable") || !strings.Contains(err.Error(), agent.HTTPAddr) {
			t.Errorf("want the deregistration's error naming the agent, have %v", err)
		}
	})

	// Nothing is registered when Ready fails; Run returns its error.
	t.Run("ReadyFails", func(t *testing.T) {
		t.Parallel()
		errCold := errors.New("cache cold")
		f := newFixture(t, agent, nil, sd.Registration{Name: "unready"}, nil)
		f.in.Ready = func(context.Context) error { return errCold }
		_, done := f.run(t)
		if err := wait(t, done); !errors.Is(err, errCold) {
			t.Errorf("want %v, have %v", errCold, err)
		}
		if registered(c, f.id) {
			t.Error("registered though never ready")
		}
	})

	// A server that stops by itself ends the instance, which leaves
	// Consul.
	t.Run("ServerStops", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, agent, nil, sd.Registration{Name: "stops"}, nil)
		_, done := f.run(t)
		eventually(t, "registered", func() bool { return registered(c, f.id) })
		f.grpc.Stop()
		if err := wait(t, done); err == nil || !strings.Contains(err.Error(), "gRPC server stopped") {
			t.Errorf("want the server's stop, have %v", err)
		}
		if registered(c, f.id) {
			t.Error("still registered")
		}
	})
}

// failingDeregister is a Client whose agent never answers a
// deregistration.
// failingDeregister is a Consul client whose deregistrations fail; it
// keeps the address of the client it wraps (ConsulConfig.NewClient's names
// its agent), as a wrapper should.
type failingDeregister struct{ addressed }

// addressed is an sd.Client that knows its agent's address.
type addressed interface {
	sd.Client
	Address() string
}

func (failingDeregister) Deregister(context.Context, string) error {
	return errors.New("agent unreachable")
}

func TestInvalidInstance(t *testing.T) {
	withHealth := grpc.NewServer()
	healthpb.RegisterHealthServer(withHealth, health.NewServer())
	r, err := sd.NewRegistrar(failingDeregister{},
		sd.Registration{Name: "x", Address: "127.0.0.1", Port: 1, HealthService: "a"}, log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		in   func(net.Listener) *Instance
		want string
	}{
		"no server":      {func(l net.Listener) *Instance { return &Instance{Listener: l} }, "no Server"},
		"no listener":    {func(net.Listener) *Instance { return &Instance{Server: grpc.NewServer()} }, "no Listener"},
		"negative drain": {func(l net.Listener) *Instance { return &Instance{Server: grpc.NewServer(), Listener: l, Drain: -1} }, "Drain -1ns"},
		"negative stop": {func(l net.Listener) *Instance {
			return &Instance{Server: grpc.NewServer(), Listener: l, StopTimeout: -1}
		}, "StopTimeout"},
		"negative resync": {func(l net.Listener) *Instance {
			return &Instance{Server: grpc.NewServer(), Listener: l, ResyncInterval: -1}
		}, "ResyncInterval"},
		"negative register": {func(l net.Listener) *Instance {
			return &Instance{Server: grpc.NewServer(), Listener: l, RegisterTimeout: -1}
		}, "RegisterTimeout"},
		"nil task": {func(l net.Listener) *Instance {
			return &Instance{Server: grpc.NewServer(), Listener: l, Background: []func(context.Context) error{nil}}
		}, "task 0 of Background is nil"},
		"health of its own": {func(l net.Listener) *Instance { return &Instance{Server: withHealth, Listener: l} }, "grpc.health.v1 service of its own"},
		"two health names": {func(l net.Listener) *Instance {
			return &Instance{Server: grpc.NewServer(), Listener: l, Registrar: r, HealthService: "b"}
		}, `"b" differs from "a"`},
	} {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		in := tc.in(lis)
		err = in.Run(context.Background())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: want an error with %q, have %v", name, tc.want, err)
		}
		if in.Listener == nil {
			lis.Close()
			continue
		}
		if _, err := lis.Accept(); err == nil || !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s: the listener is not closed (%v)", name, err)
		}
		lis.Close()
	}
	if err := (&Instance{}).Run(context.Background()); err == nil {
		t.Error("the zero Instance: want an error")
	}
}

// An *http.Server runs as an Instance too, without Consul: its health
// server (given, since an HTTP server has no gRPC health) follows it.
func TestHTTPServerInstance(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := health.NewServer()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, _ := hs.Check(r.Context(), &healthpb.HealthCheckRequest{})
		fmt.Fprint(w, resp.GetStatus())
	}), ReadHeaderTimeout: time.Second}
	in := &Instance{Server: HTTPServer(srv), Listener: lis, Health: hs, Drain: time.Nanosecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	url := "http://" + lis.Addr().String()
	eventually(t, "SERVING over HTTP", func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b) == "SERVING"
	})
	cancel()
	if err := wait(t, done); err != nil {
		t.Errorf("Run: %v", err)
	}
	if _, err := http.Get(url); err == nil {
		t.Error("still serving after Run returned")
	}
}

package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/overload"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/sd"
)

// How an interop instance answers.
const (
	serving     = iota
	hangs       // every call waits for its caller to give up
	shedStreams // every stream is shed before it is answered
	erroring    // every unary call fails, Internal, while its health passes
)

// interop is an instance of grpc-go's interop TestService, in-process and
// registered in Consul with a gRPC health check: unary calls answer with
// its address, a streaming output call sends what it is asked for.
type interop struct {
	testgrpc.UnimplementedTestServiceServer
	addr    string
	srv     *grpc.Server
	mode    atomic.Int32
	unary   atomic.Int64 // unary calls it answered
	failed  atomic.Int64 // unary calls it failed
	streams atomic.Int64 // streams open on it now
	opened  atomic.Int64 // streams it ever opened
	marker  overload.Marker
}

func (s *interop) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	switch s.mode.Load() {
	case hangs:
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	case erroring:
		s.failed.Add(1)
		return nil, status.Error(codes.Internal, "database pool broken")
	}
	s.unary.Add(1)
	return &testgrpc.SimpleResponse{Hostname: s.addr}, nil
}

func (s *interop) StreamingOutputCall(req *testgrpc.StreamingOutputCallRequest, stream testgrpc.TestService_StreamingOutputCallServer) error {
	switch s.mode.Load() {
	case shedStreams:
		return s.marker.Shed("server busy: test")
	case hangs:
		<-stream.Context().Done()
		return stream.Context().Err()
	}
	s.streams.Add(1)
	s.opened.Add(1)
	defer s.streams.Add(-1)
	for _, p := range req.GetResponseParameters() {
		select {
		case <-time.After(time.Duration(p.GetIntervalUs()) * time.Microsecond):
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: []byte(s.addr)}}); err != nil {
			return err
		}
	}
	return nil
}

// startInterop starts n interop instances of service, registers them
// with agent and waits until their checks pass.
func startInterop(t *testing.T, agent *testenv.Agent, service string, n int) []*interop {
	t.Helper()
	var out []*interop
	var ids []string
	for i := range n {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := &interop{addr: lis.Addr().String(), srv: grpc.NewServer(), marker: overload.NewMarker()}
		testgrpc.RegisterTestServiceServer(s.srv, s)
		id := fmt.Sprintf("%s-%d", service, i)
		serveRegistered(t, agent, s.srv, lis, service, id)
		out = append(out, s)
		ids = append(ids, id)
	}
	agent.WaitPassing(service, ids...)
	return out
}

func newConn(t *testing.T, agent *testenv.Agent, service string, call client.CallConfig, opts ...client.Option) *grpc.ClientConn {
	t.Helper()
	conn, err := client.NewConn(client.Config{Consul: sd.ConsulConfig{Address: agent.HTTPAddr}, Service: service, CallConfig: call}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// A ClientConn from NewConn serves a generated client: unary calls go
// round the instances, grpc.Peer names the instance that answered, and
// streams spread evenly over the instances while they are open, by round
// robin and by P2C. Closing it ends every goroutine it started.
func TestNewConnUnaryAndStreams(t *testing.T) {
	for _, b := range []string{client.RoundRobinName, client.P2CName} {
		t.Run(b, func(t *testing.T) { testUnaryAndStreams(t, b) })
	}
}

func testUnaryAndStreams(t *testing.T, balancer string) {
	agent := testenv.Consul(t)
	insts := startInterop(t, agent, "interop", 3)
	leaks := goleak.IgnoreCurrent()
	conn, err := client.NewConn(client.Config{Consul: sd.ConsulConfig{Address: agent.HTTPAddr}, Service: "interop", CallConfig: client.CallConfig{Balancer: balancer}})
	if err != nil {
		t.Fatal(err)
	}
	tc := testgrpc.NewTestServiceClient(conn)

	for i := range 300 {
		var p peer.Peer
		resp, err := tc.UnaryCall(ctx(t), &testgrpc.SimpleRequest{}, grpc.Peer(&p))
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if p.Addr == nil || p.Addr.String() != resp.GetHostname() {
			t.Fatalf("call %d: grpc.Peer says %v, the instance %s answered", i, p.Addr, resp.GetHostname())
		}
	}
	for _, s := range insts {
		// By round robin, 100 each; P2C favours the fastest, and sequential
		// calls leave each instance a few.
		if n := s.unary.Load(); (balancer == client.RoundRobinName && n < 95) || n == 0 {
			t.Errorf("%s answered %d of 300 calls by %s", s.addr, n, balancer)
		}
	}

	// 60 streams of 2s, opened in waves of 10: spread by p2c over the
	// streams each instance has open. (Opened all at once, most picks are
	// made before any stream is counted, and under -race on a busy
	// machine a run put 29 of 60 on one instance; BenchmarkStreams
	// measures the burst.)
	const streams, wave = 60, 10
	sctx, cancel := context.WithCancel(ctx(t))
	defer cancel()
	var opened sync.WaitGroup
	var errs []error
	var mu sync.Mutex
	for i := range streams {
		if i%wave == 0 {
			opened.Wait()
		}
		opened.Add(1)
		go func() {
			st, err := tc.StreamingOutputCall(sctx, &testgrpc.StreamingOutputCallRequest{ResponseParameters: []*testgrpc.ResponseParameters{{IntervalUs: 1}, {IntervalUs: 2e6}}})
			if err == nil {
				_, err = st.Recv() // the first answer: it is open on its instance
			}
			opened.Done()
			if err == nil {
				for err == nil {
					_, err = st.Recv()
				}
				if err == io.EOF {
					err = nil
				}
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	opened.Wait()
	var most, total int64
	for _, s := range insts {
		n := s.streams.Load()
		most = max(most, n)
		total += n
	}
	if total != streams {
		t.Errorf("%d streams open on the instances; want %d", total, streams)
	}
	// Spread, not piled on one: 3x the mean would be all on one. The
	// tight figure (at most 1.15x, worst of 5 runs) is BenchmarkStreams';
	// under make test's load a run came out at 1.2x (24 of 60).
	if mean := float64(total) / 3; float64(most) > 1.3*mean {
		t.Errorf("the busiest instance holds %d of %d streams; want at most 1.3 times the mean", most, total)
	}
	// The live page shows the ClientConn's view: its streams open on each
	// instance, from the same Endpointer as the go-kit face's.
	page := httptest.NewServer(client.Handler())
	face, shown := pageClient(t, page, insts[0].addr)
	page.Close()
	var onPage int64
	for _, in := range shown {
		onPage += in.Streams
	}
	if face != "grpc.ClientConn" || onPage != streams {
		t.Errorf("the page shows a %q client with %d streams open; want the grpc.ClientConn's %d", face, onPage, streams)
	}
	cancel()
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	for _, err := range errs {
		if status.Code(err) != codes.Canceled {
			t.Errorf("stream: %v", err)
		}
	}
	mu.Unlock()
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, leaks)
}

// Unary calls through a ClientConn lose nothing to an instance that stops
// (its connections closed at once, as by SIGKILL) or that hangs: Retry
// tries each on another instance within its timeout.
func TestNewConnRetriesAroundStoppedAndHungInstances(t *testing.T) {
	agent := testenv.Consul(t)
	insts := startInterop(t, agent, "interop", 3)
	conn := newConn(t, agent, "interop", client.CallConfig{Balancer: client.P2CName, Retry: client.RetryConfig{Timeout: time.Second}})
	tc := testgrpc.NewTestServiceClient(conn)

	var failed atomic.Int64
	var wg sync.WaitGroup
	tick := time.NewTicker(2 * time.Millisecond) // 500 calls a second, open loop
	defer tick.Stop()
	for i := range 1500 {
		<-tick.C
		switch i {
		case 500:
			insts[0].srv.Stop()
		case 1000:
			insts[1].mode.Store(hangs)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := tc.UnaryCall(ctx(t), &testgrpc.SimpleRequest{}); err != nil {
				if failed.Add(1) <= 5 {
					t.Errorf("call %d: %v", i, err)
				}
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of 1500 calls failed; want 0", n)
	}
}

// A stream that an instance sheds before answering opens again on
// another instance, its request sent again, and the caller sees only the
// answer; every stream's outcome reaches the instance's record.
func TestNewConnStreamShedOpensElsewhere(t *testing.T) {
	agent := testenv.Consul(t)
	insts := startInterop(t, agent, "interop", 3)
	insts[0].mode.Store(shedStreams)
	conn := newConn(t, agent, "interop", client.CallConfig{Balancer: client.RoundRobinName})
	tc := testgrpc.NewTestServiceClient(conn)
	for i := range 30 {
		st, err := tc.StreamingOutputCall(ctx(t), &testgrpc.StreamingOutputCallRequest{ResponseParameters: []*testgrpc.ResponseParameters{{IntervalUs: 1}}})
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		resp, err := st.Recv()
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		if got := string(resp.GetPayload().GetBody()); got == insts[0].addr {
			t.Fatalf("stream %d answered by the instance that sheds streams", i)
		}
		if _, err := st.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("stream %d: %v, want its end", i, err)
		}
	}
	if n := insts[1].opened.Load() + insts[2].opened.Load(); n != 30 {
		t.Errorf("the serving instances opened %d streams; want 30", n)
	}
}

// grpc.NewClient with a consul target and DialOptions gets what NewConn
// gives: discovery, trimkit's balancer, and Retry around an instance that
// stops; a second ClientConn on the same options is refused.
func TestConsulTarget(t *testing.T) {
	agent := testenv.Consul(t)
	insts := startInterop(t, agent, "interop", 3)
	opts := append(client.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	conn, err := grpc.NewClient("consul://"+agent.HTTPAddr+"/interop?balancer=p2c&timeout=1s", opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tc := testgrpc.NewTestServiceClient(conn)
	for i := range 200 {
		if i == 100 {
			insts[0].srv.Stop()
		}
		if _, err := tc.UnaryCall(ctx(t), &testgrpc.SimpleRequest{}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}

	again, err := grpc.NewClient("consul://"+agent.HTTPAddr+"/interop", opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	_, err = testgrpc.NewTestServiceClient(again).UnaryCall(ctx(t), &testgrpc.SimpleRequest{})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "call DialOptions again") {
		t.Errorf("a second ClientConn on one DialOptions: %v; want Unavailable saying to call DialOptions again", err)
	}
}

func TestConsulTargetParameters(t *testing.T) {
	for _, tc := range []struct {
		target, want string
	}{
		{"consul:///orders?tag=a&tag=b&balancer=p2c&timeout=2s&attempts=4&hedge-after=10ms&subset=3&subset-caller=2", ""},
		{"consul://10.0.0.1:8500/orders?discovery=dns&dns-addr=127.0.0.1:8600&tag=a", ""},
		{"consul:///orders?dc=dc1&dc=dc2&overprovisioning=2", ""},
		{"consul:///orders?dc=dc1&dc=dc1", `datacenter "dc1" named twice`},
		{"consul:///orders?dc=dc1&dc=dc2&overprovisioning=lots", "overprovisioning=lots"},
		{"consul:///orders?near=_agent&zone=z1", ""},
		{"consul:///orders?near=node%2F1", `Near "node/1"`},
		{"consul:///orders?near=_agent&discovery=dns", `Near "_agent": needs Consul discovery`},
		{"consul:///orders?near=_agent&subset=3", "nor Near"},
		{"consul:///orders?balancer=fastest", `Balancer "fastest"`},
		{"consul:///orders?timeout=soon", "timeout=soon"},
		{"consul:///orders?wait=14s", `unknown parameter "wait"`},
		{"consul:///", `Service ""`},
		{"dns:///orders", `scheme "dns"`},
	} {
		u, err := url.Parse(tc.target)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := client.ConsulTarget(*u)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.target, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v; want an error saying %s", tc.target, err, tc.want)
		}
		if tc.want == "" && cfg.Service != "orders" {
			t.Errorf("%s: service %q", tc.target, cfg.Service)
		}
	}
	u, _ := url.Parse("consul://10.0.0.1:8500/orders?tag=a&tag=b&balancer=p2c&timeout=2s&attempts=4")
	cfg, _ := client.ConsulTarget(*u)
	if cfg.Consul.Address != "10.0.0.1:8500" || !slices.Equal(cfg.Tags, []string{"a", "b"}) || cfg.Balancer != client.P2CName ||
		cfg.Retry.Timeout != 2*time.Second || cfg.Retry.MaxAttempts != 4 {
		t.Errorf("ConsulTarget(%s) = %+v", u, cfg)
	}
	u, _ = url.Parse("consul:///orders?dc=east&dc=west&overprovisioning=1.2")
	if cfg, _ = client.ConsulTarget(*u); !slices.Equal(cfg.Datacenters, []string{"east", "west"}) || cfg.Overprovisioning != 1.2 {
		t.Errorf("ConsulTarget(%s) = %+v", u, cfg)
	}
	u, _ = url.Parse("consul:///orders?near=node-7")
	if cfg, _ = client.ConsulTarget(*u); cfg.Near != "node-7" {
		t.Errorf("ConsulTarget(%s) = %+v", u, cfg)
	}
}

// interopEndpoints is the go-kit face's EndpointFunc for the interop
// service: a unary call, answered with the instance's address.
func interopEndpoints(conn *grpc.ClientConn) endpoint.Endpoint {
	tc := testgrpc.NewTestServiceClient(conn)
	return func(ctx context.Context, _ any) (any, error) {
		resp, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		if err != nil {
			return nil, err
		}
		return resp.GetHostname(), nil
	}
}

// WithAnswered names the instance that answered a call of the go-kit
// face, hedged or not, and of the native face; grpc.Peer agrees.
func TestWithAnsweredOnBothFaces(t *testing.T) {
	agent := testenv.Consul(t)
	insts := startInterop(t, agent, "interop", 3)
	insts[0].mode.Store(hangs) // hedges answer the calls it gets
	call := client.CallConfig{Balancer: client.RoundRobinName, Retry: client.RetryConfig{HedgeAfter: 20 * time.Millisecond, Timeout: 2 * time.Second}}
	cfg := client.Config{Consul: sd.ConsulConfig{Address: agent.HTTPAddr}, Service: "interop", CallConfig: call}
	c, err := client.New(cfg, interopEndpoints)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 30 {
		var addr string
		resp, err := c.Endpoint()(client.WithAnswered(ctx(t), &addr), nil)
		if err != nil {
			t.Fatalf("go-kit face, call %d: %v", i, err)
		}
		if addr != resp.(string) || addr == insts[0].addr {
			t.Fatalf("go-kit face, call %d: WithAnswered says %q, %q answered", i, addr, resp)
		}
	}

	hedges := newCounter()
	call.Retry.Metrics.Hedges = hedges
	cfg.CallConfig = call
	conn, err := client.NewConn(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tc := testgrpc.NewTestServiceClient(conn)
	for i := range 30 {
		var addr string
		var p peer.Peer
		resp, err := tc.UnaryCall(client.WithAnswered(ctx(t), &addr), &testgrpc.SimpleRequest{}, grpc.Peer(&p))
		if err != nil {
			t.Fatalf("native face, call %d: %v", i, err)
		}
		if addr != resp.GetHostname() || p.Addr.String() != addr {
			t.Fatalf("native face, call %d: WithAnswered says %q, grpc.Peer %v, %q answered", i, addr, p.Addr, resp.GetHostname())
		}
	}
	// Every call that went to the hung instance was hedged, and two of
	// them came before its two strikes (hedged attempts that lost) ejected
	// it; how many more depends on when its probe readmits it.
	if n := hedges.sum(); n < 2 {
		t.Errorf("the native face hedged %v of 30 calls, at least the two that ejected the hung instance", n)
	}
}

// A stream open on an instance that hangs ends, Unavailable, once the
// instance has left discovery and its grace period is over, as the go-kit
// face's calls on a closed connection do: its caller opens it elsewhere.
func TestNewConnStreamEndsWhenItsInstanceLeaves(t *testing.T) {
	agent := testenv.Consul(t)
	insts := startInterop(t, agent, "interop", 2)
	for _, s := range insts {
		s.mode.Store(hangs)
	}
	conn := newConn(t, agent, "interop", client.CallConfig{EndpointerConfig: client.EndpointerConfig{CloseGrace: 100 * time.Millisecond}})
	st, err := testgrpc.NewTestServiceClient(conn).StreamingOutputCall(ctx(t), &testgrpc.StreamingOutputCallRequest{}, grpc.Peer(&peer.Peer{}))
	if err != nil {
		t.Fatal(err)
	}
	// Which instance holds it: the one whose handler runs. Take both out of
	// discovery; the stream ends within the grace period of its leaving.
	time.Sleep(200 * time.Millisecond)
	for i := range insts {
		if err := agent.API().Agent().ServiceDeregister(fmt.Sprintf("interop-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() {
		_, err := st.Recv()
		done <- err
	}()
	select {
	case err := <-done:
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "left discovery") {
			t.Errorf("the stream ended with %v; want Unavailable, its instance having left discovery", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stream on an instance that left discovery is still open after 10s")
	}
}

// Ejection on the native face: an instance that fails every call while its
// health check passes is ejected after two failures in a row and gets
// almost none of the calls; once it serves again, a health probe on its
// own SubConn readmits it after its ejection time, and calls return to it.
func TestNewConnEjectsAndProbesBack(t *testing.T) {
	agent := testenv.Consul(t)
	insts := startInterop(t, agent, "interop", 3)
	insts[0].mode.Store(erroring)
	var ejections = newCounter()
	conn := newConn(t, agent, "interop", client.CallConfig{Balancer: client.RoundRobinName,
		EndpointerConfig: client.EndpointerConfig{Ejection: client.Ejection{BaseTime: 300 * time.Millisecond}, Metrics: client.Metrics{Ejections: ejections}}})
	tc := testgrpc.NewTestServiceClient(conn)
	for i := range 300 {
		if _, err := tc.UnaryCall(ctx(t), &testgrpc.SimpleRequest{}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	// Without ejection it would get a third (100). With it, 8 or 9 alone
	// and 11 under make test's load: how often its probe readmits it
	// (its health passes) depends on how long the 300 calls take.
	if n := insts[0].failed.Load(); n > 20 {
		t.Errorf("the failing instance got %d of 300 calls; want it ejected after a few", n)
	}
	if ejections.sum() == 0 {
		t.Error("no ejection counted")
	}
	insts[0].mode.Store(serving)
	deadline := time.Now().Add(10 * time.Second)
	for insts[0].unary.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the instance that serves again got no call within 10s: not readmitted")
		}
		if _, err := tc.UnaryCall(ctx(t), &testgrpc.SimpleRequest{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

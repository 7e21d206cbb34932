package grpcserver

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// echoDesc is a one-method service whose handler the test controls.
func echoDesc(handler func(ctx context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error)) *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: "test.Echo",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Echo",
			Handler: func(_ any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
				in := new(wrapperspb.BytesValue)
				if err := dec(in); err != nil {
					return nil, err
				}
				info := &grpc.UnaryServerInfo{FullMethod: "/test.Echo/Echo"}
				h := func(ctx context.Context, req any) (any, error) { return handler(ctx, req.(*wrapperspb.BytesValue)) }
				if interceptor == nil {
					return h(ctx, in)
				}
				return interceptor(ctx, in, info, h)
			},
		}},
	}
}

// serve serves the echo handler and health with l, and returns a
// connection to it and the server's admission.
func serve(t *testing.T, l Limits, handler func(ctx context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error)) (*grpc.ClientConn, *admission, string) {
	t.Helper()
	opts, a := l.serverOptions()
	s := grpc.NewServer(opts...)
	s.RegisterService(echoDesc(handler), nil)
	conn, addr := serveAndDial(t, s, l)
	return conn, a, addr
}

// serveAndDial registers health on s, serves it on a listener of l's, and
// returns a connection to it and its address; the test's end stops both.
func serveAndDial(t *testing.T, s *grpc.Server, l Limits) (*grpc.ClientConn, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	healthpb.RegisterHealthServer(s, health.NewServer())
	go func() { _ = s.Serve(l.Listener(lis)) }()
	t.Cleanup(s.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, lis.Addr().String()
}

func echo(ctx context.Context, conn *grpc.ClientConn, b []byte) error {
	return conn.Invoke(ctx, "/test.Echo/Echo", wrapperspb.Bytes(b), new(wrapperspb.BytesValue))
}

// eventually polls cond for up to 5s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5s: %s", what)
		}
	}
}

func TestCallsOverTheLimitAreRefusedAtOnceHealthChecksNever(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 8)
	conn, a, _ := serve(t, Limits{MaxCallsInFlight: 2}, func(ctx context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
		entered <- struct{}{}
		<-release
		return in, nil
	})
	ctx := context.Background()
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- echo(ctx, conn, []byte("x")) }()
	}
	<-entered
	<-entered
	err := echo(ctx, conn, []byte("x"))
	if want, have := codes.ResourceExhausted, status.Code(err); want != have {
		t.Errorf("a third call: want %v, have %v", want, have)
	}
	if !strings.Contains(err.Error(), "2 calls in flight") {
		t.Errorf("the refusal %q does not say why", err)
	}
	if len(entered) != 0 {
		t.Error("the refused call's handler ran")
	}
	for range 3 {
		if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Errorf("a health check while full: %v", err)
		}
	}
	close(release)
	for range 2 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	eventually(t, "every ticket given back", func() bool { return a.inflight.Load() == 0 })
	if err := echo(ctx, conn, []byte("x")); err != nil {
		t.Errorf("a call once the others ended: %v", err)
	}
}

// A call that never reaches an interceptor gives its place back when its
// stream ends: an unknown method, and a caller that gives up before its
// request is whole.
func TestCallsThatNeverRunGiveTheirPlaceBack(t *testing.T) {
	conn, a, _ := serve(t, Limits{MaxCallsInFlight: 1, MaxRecvMsgSize: 8 << 20}, func(_ context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
		return in, nil
	})
	ctx := context.Background()
	for range 3 {
		err := conn.Invoke(ctx, "/test.Echo/Nope", wrapperspb.Bytes(nil), new(wrapperspb.BytesValue))
		if want, have := codes.Unimplemented, status.Code(err); want != have {
			t.Fatalf("an unknown method: want %v, have %v", want, have)
		}
		eventually(t, "the unknown method's ticket given back", func() bool { return a.inflight.Load() == 0 })
	}
	// A big request cancelled as soon as it started: flow control holds
	// most of it back, so the server has its headers, not its message.
	for range 3 {
		cctx, cancel := context.WithCancel(ctx)
		time.AfterFunc(time.Millisecond, cancel)
		_ = echo(cctx, conn, make([]byte, 6<<20))
		eventually(t, "the abandoned call's ticket given back", func() bool { return a.inflight.Load() == 0 })
	}
	// An abandoned call's headers may reach the server after the check
	// above: its place must come back all the same.
	eventually(t, "a call admitted after them", func() bool { return echo(ctx, conn, []byte("x")) == nil })
	eventually(t, "every ticket given back", func() bool { return a.inflight.Load() == 0 })
}

// A call whose caller gives up while its handler runs keeps its place
// until the handler returns: the server is still doing its work, and the
// sweep of the unclaimed tickets must not give that place back.
func TestAbandonedCallKeepsItsPlaceWhileItsHandlerRuns(t *testing.T) {
	entered, release := make(chan struct{}, 2), make(chan struct{})
	conn, a, _ := serve(t, Limits{MaxCallsInFlight: 1}, func(_ context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
		entered <- struct{}{}
		<-release // a handler that does not watch its context
		return in, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 1)
	go func() { errs <- echo(ctx, conn, []byte("x")) }()
	<-entered
	cancel()
	if want, have := codes.Canceled, status.Code(<-errs); want != have {
		t.Fatalf("the abandoned call: want %v, have %v", want, have)
	}
	time.Sleep(5 * sweepEvery)
	if n := a.inflight.Load(); n != 1 {
		t.Errorf("in flight while the abandoned call's handler runs: want 1, have %d", n)
	}
	close(release)
	eventually(t, "its place given back once its handler returned", func() bool { return a.inflight.Load() == 0 })
	if err := echo(context.Background(), conn, []byte("x")); err != nil {
		t.Errorf("a call after it: %v", err)
	}
}

func TestRequestOverTheReceiveLimit(t *testing.T) {
	conn, _, _ := serve(t, Limits{MaxRecvMsgSize: 1024}, func(_ context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
		return in, nil
	})
	if err := echo(context.Background(), conn, make([]byte, 1000)); err != nil {
		t.Errorf("under the limit: %v", err)
	}
	if want, have := codes.ResourceExhausted, status.Code(echo(context.Background(), conn, make([]byte, 1100))); want != have {
		t.Errorf("over the limit: want %v, have %v", want, have)
	}
}

// clientPreface is what an HTTP/2 client sends first: the preface and an
// empty SETTINGS frame.
const clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + "\x00\x00\x00\x04\x00\x00\x00\x00\x00"

func TestConnectionsOverTheLimitAreClosedAtOnce(t *testing.T) {
	_, _, addr := serve(t, Limits{MaxConnections: 2}, func(_ context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
		return in, nil
	})
	// The server speaks first on an HTTP/2 connection (its SETTINGS): an
	// accepted connection gets bytes, a refused one EOF.
	first := func(c net.Conn) error {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Read(make([]byte, 1))
		return err
	}
	// established dials a connection that says what a gRPC client says
	// first, so that the server establishes it.
	established := func() (net.Conn, error) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return nil, err
		}
		if _, err := io.WriteString(c, clientPreface); err != nil {
			c.Close()
			return nil, err
		}
		if err := first(c); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	var held []net.Conn
	for range 2 {
		c, err := established()
		if err != nil {
			t.Fatalf("a connection within the limit: %v", err)
		}
		defer c.Close()
		held = append(held, c)
	}
	// Over the limit, with both places established: closed at once,
	// whether it speaks or not.
	for _, speaks := range []bool{false, true} {
		extra, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer extra.Close()
		if speaks {
			_, _ = io.WriteString(extra, clientPreface)
		}
		if err := first(extra); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("a connection over the limit (speaking first: %v): want EOF, have %v", speaks, err)
		}
	}
	held[0].Close()
	eventually(t, "a connection accepted once another closed", func() bool {
		c, err := established()
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

func TestLimitsValidate(t *testing.T) {
	if err := (Limits{}).Validate(); err != nil {
		t.Errorf("zero limits: %v", err)
	}
	err := Limits{MaxCallsInFlight: -1, HandshakeTimeout: -time.Second}.Validate()
	for _, want := range []string{"Limits.MaxCallsInFlight -1", "Limits.HandshakeTimeout -1000000000"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
	}
}

package grpcserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/kit/metrics/generic"
	"github.com/go-kit/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trimkit/trimkit/internal/overload"
)

// watchDesc is a service of one server-streaming method, whose handler
// the test controls: it gets the caller's one message.
func watchDesc(handler func(in *wrapperspb.BytesValue, stream grpc.ServerStream) error) *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: "test.Watch",
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    "Watch",
			ServerStreams: true,
			Handler: func(_ any, stream grpc.ServerStream) error {
				in := new(wrapperspb.BytesValue)
				if err := stream.RecvMsg(in); err != nil {
					return err
				}
				return handler(in, stream)
			},
		}},
	}
}

// serveOn registers the echo service (which answers its request), the
// watch service and health on s, serves it on a listener with l's
// connection limits, and returns a connection to it.
func serveOn(t *testing.T, s *grpc.Server, l Limits, watch func(*wrapperspb.BytesValue, grpc.ServerStream) error) *grpc.ClientConn {
	t.Helper()
	s.RegisterService(echoDesc(func(_ context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) { return in, nil }), nil)
	s.RegisterService(watchDesc(watch), nil)
	conn, _ := serveAndDial(t, s, l)
	return conn
}

// openWatch opens a watch with message b, and returns it once its first
// message has come: the server admitted it and its handler runs.
func openWatch(ctx context.Context, conn *grpc.ClientConn, b string) (grpc.ClientStream, error) {
	s, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/test.Watch/Watch")
	if err != nil {
		return nil, err
	}
	// io.EOF: the stream has ended already; RecvMsg says how.
	if err := s.SendMsg(wrapperspb.Bytes([]byte(b))); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if err := s.CloseSend(); err != nil {
		return nil, err
	}
	if err := s.RecvMsg(new(wrapperspb.BytesValue)); err != nil {
		return nil, err
	}
	return s, nil
}

// untilEnd reads s to its end: nil when it ended OK, else its status.
func untilEnd(s grpc.ClientStream) error {
	for {
		err := s.RecvMsg(new(wrapperspb.BytesValue))
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// holdUntil is a watch handler that sends one message and holds the
// stream until release is closed or the stream's context ends.
func holdUntil(release <-chan struct{}) func(*wrapperspb.BytesValue, grpc.ServerStream) error {
	return func(in *wrapperspb.BytesValue, stream grpc.ServerStream) error {
		if err := stream.SendMsg(in); err != nil {
			return err
		}
		select {
		case <-release:
			return nil
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

// longestObserved is a limit that records the longest latency it
// observes. It embeds an *AdaptiveLimit, admitOver included: admission
// treats it as the limit itself.
type longestObserved struct {
	*AdaptiveLimit
	longest atomic.Int64
}

func (l *longestObserved) Observe(latency time.Duration, inflight int) {
	if int64(latency) > l.longest.Load() {
		l.longest.Store(int64(latency))
	}
	l.AdaptiveLimit.Observe(latency, inflight)
}

// Long streams beside unary calls, under the default limits: as measured
// before, 2s streams opened again and again fed the adaptive limit seconds
// of latency, it fell to its minimum, and the streams' places left none to
// unary calls. Streams now neither feed it nor hold its places.
func TestLongStreamsBesideUnaryCallsShedNone(t *testing.T) {
	const (
		watchers = 24
		life     = 2 * time.Second // of each stream
		run      = 4 * time.Second
		workers  = 4
		interval = 2500 * time.Microsecond // a call per worker: 1,600 calls/s
	)
	// The default limit, as Limits{} makes it, watched.
	adaptive, ok := Limits{}.WithDefaults().Concurrency.(*AdaptiveLimit)
	if !ok {
		t.Fatal("the default limit is not an *AdaptiveLimit")
	}
	limit := &longestObserved{AdaptiveLimit: adaptive}
	s := Limits{Concurrency: limit}.NewServer()
	conn := serveOn(t, s.Server, Limits{}, func(in *wrapperspb.BytesValue, stream grpc.ServerStream) error {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		end := time.After(life)
		for {
			if err := stream.SendMsg(in); err != nil {
				return err
			}
			select {
			case <-end:
				return nil
			case <-stream.Context().Done():
				return stream.Context().Err()
			case <-tick.C:
			}
		}
	})

	// Cancelled, not a deadline: the deadline the server gets may end a
	// stream before the client's own ends, and that stream fail.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	time.AfterFunc(run, cancel)
	var (
		wg                   sync.WaitGroup
		calls, failed, whole atomic.Int64
		lowest               atomic.Int64
		streamErrs           = make(chan error, 100*watchers)
	)
	lowest.Store(int64(limit.Limit()))
	// The streams end one after another (staggered starts), and are
	// opened again at once, as long-lived watches are.
	for i := range watchers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-time.After(time.Duration(i) * 60 * time.Millisecond):
			case <-ctx.Done():
				return
			}
			for ctx.Err() == nil {
				st, err := openWatch(ctx, conn, "w")
				if err == nil {
					err = untilEnd(st)
				}
				switch {
				case err == nil:
					whole.Add(1)
				case ctx.Err() == nil:
					streamErrs <- err
				}
			}
		}()
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				// Not ctx: a call cut short by the end of the run is no
				// failure.
				err := echo(context.Background(), conn, []byte("x"))
				calls.Add(1)
				if err != nil {
					if failed.Add(1) <= 3 {
						t.Errorf("a unary call beside the streams: %v", err)
					}
				}
				if l := int64(limit.Limit()); l < lowest.Load() {
					lowest.Store(l)
				}
			}
		}()
	}
	eventually(t, "every watcher's stream open", func() bool { return s.a.streams.Load() == watchers })
	if n := s.a.inflight.Load(); n > workers {
		t.Errorf("%d calls in flight with %d unary callers: the streams count in flight", n, workers)
	}
	wg.Wait()
	close(streamErrs)
	for err := range streamErrs {
		t.Errorf("a stream: %v", err)
	}

	t.Logf("%d unary calls, %d failed; %d streams of %v; limit %d, lowest %d; longest latency observed %v",
		calls.Load(), failed.Load(), whole.Load(), life, limit.Limit(), lowest.Load(), time.Duration(limit.longest.Load()))
	if calls.Load() < 1000 {
		t.Errorf("only %d unary calls", calls.Load())
	}
	if whole.Load() < watchers {
		t.Errorf("%d streams lived their whole %v, want at least %d", whole.Load(), life, watchers)
	}
	if failed.Load() != 0 {
		t.Errorf("%d of %d unary calls failed beside the streams, want none", failed.Load(), calls.Load())
	}
	if d := time.Duration(limit.longest.Load()); d >= life/2 {
		t.Errorf("the limit observed a latency of %v: a stream's life", d)
	}
	// The unary calls alone, which use a fifth of it, leave it where it
	// started; a loaded machine's latency may lower it, but not to its
	// floor, where the streams' lives took it.
	if l := lowest.Load(); l <= int64(DefaultAdaptive.Min) {
		t.Errorf("the limit fell to %d beside the streams, its minimum", l)
	}
	eventually(t, "every place given back", func() bool { return s.a.streams.Load() == 0 && s.a.inflight.Load() == 0 })
}

// Streams over MaxStreams are shed at once, marked; unary calls, whatever
// the streams open, and health checks, streams or not, still pass.
func TestStreamsOverMaxStreamsAreShed(t *testing.T) {
	t.Run("NewServer", func(t *testing.T) {
		testStreamsOverMaxStreamsAreShed(t, func(l Limits) (*grpc.Server, *admission) {
			s := l.NewServer()
			return s.Server, s.a
		})
	})
	// A server from ServerOptions alone admits a stream in flight at
	// first, then moves it among the streams.
	t.Run("ServerOptions", func(t *testing.T) {
		testStreamsOverMaxStreamsAreShed(t, func(l Limits) (*grpc.Server, *admission) {
			opts, a := l.serverOptions()
			return grpc.NewServer(opts...), a
		})
	})
}

func testStreamsOverMaxStreamsAreShed(t *testing.T, build func(Limits) (*grpc.Server, *admission)) {
	release := make(chan struct{})
	defer close(release) // a test that stops early lets its handlers go
	shed, streams, inflight := generic.NewCounter("shed"), generic.NewGauge("streams"), generic.NewGauge("inflight")
	l := Limits{MaxStreams: 2, MaxCallsInFlight: 1, Metrics: AdmissionMetrics{Shed: shed, Streams: streams, InFlight: inflight}}
	srv, a := build(l)
	conn := serveOn(t, srv, l, holdUntil(release))
	ctx := context.Background()

	ended := make(chan error, 2)
	for range 2 {
		st, err := openWatch(ctx, conn, "w")
		if err != nil {
			t.Fatalf("a stream within MaxStreams: %v", err)
		}
		go func() { ended <- untilEnd(st) }()
	}
	if a.streams.Load() != 2 || streams.Value() != 2 || a.inflight.Load() != 0 {
		t.Errorf("2 streams open: streams %d (gauge %v), in flight %d; want 2, 2, 0", a.streams.Load(), streams.Value(), a.inflight.Load())
	}
	_, err := openWatch(ctx, conn, "w")
	if status.Code(err) != codes.ResourceExhausted || !overload.IsShed(err) || !strings.Contains(err.Error(), "MaxStreams") {
		t.Errorf("a stream over MaxStreams: %v; want ResourceExhausted marked as shed, naming MaxStreams", err)
	}
	if shed.Value() != 1 {
		t.Errorf("shed counter = %v, want 1", shed.Value())
	}
	// MaxCallsInFlight is 1: the streams hold none of it.
	for range 3 {
		if err := echo(ctx, conn, []byte("x")); err != nil {
			t.Errorf("a unary call beside MaxStreams streams: %v", err)
		}
	}
	hc := healthpb.NewHealthClient(conn)
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("a health check beside MaxStreams streams: %v", err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hw, err := hc.Watch(wctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = hw.Recv()
	}
	if err != nil {
		t.Errorf("a health watch (a stream) beside MaxStreams streams: %v", err)
	}

	release <- struct{}{} // one stream ends
	if err := <-ended; err != nil {
		t.Errorf("a stream its handler ended: %v", err)
	}
	eventually(t, "the stream's place given back", func() bool { return a.streams.Load() == 1 && streams.Value() == 1 })
	if _, err := openWatch(ctx, conn, "w"); err != nil {
		t.Errorf("a stream once another ended: %v", err)
	}
}

// However a server was built, a stream's life never reaches the limit,
// and an open stream holds a place among the streams, none in flight: the
// admission of ServerOptions alone, which does not know the server's
// methods, moves it there when its handler starts.
func TestStreamsNeverFeedTheLimit(t *testing.T) {
	for _, c := range []struct {
		name   string
		build  func(Limits) (*grpc.Server, *admission)
		counts func(*admission) (streams, inflight int64)
	}{
		{"NewServer", func(l Limits) (*grpc.Server, *admission) {
			s := l.NewServer()
			return s.Server, s.a
		}, func(a *admission) (int64, int64) { return 1, 0 }},
		{"ServerOptions", func(l Limits) (*grpc.Server, *admission) {
			opts, a := l.serverOptions()
			return grpc.NewServer(opts...), a
		}, func(a *admission) (int64, int64) { return 1, 0 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			release := make(chan struct{})
			limit := &recordingLimit{ConcurrencyLimit: FixedLimit(10)}
			l := Limits{Concurrency: limit}
			s, a := c.build(l)
			conn := serveOn(t, s, l, holdUntil(release))
			ctx := context.Background()
			st, err := openWatch(ctx, conn, "w")
			if err != nil {
				t.Fatal(err)
			}
			wantStreams, wantInflight := c.counts(a)
			if a.streams.Load() != wantStreams || a.inflight.Load() != wantInflight {
				t.Errorf("a stream open: streams %d, in flight %d; want %d, %d", a.streams.Load(), a.inflight.Load(), wantStreams, wantInflight)
			}
			close(release)
			if err := untilEnd(st); err != nil {
				t.Fatal(err)
			}
			if err := echo(ctx, conn, []byte("x")); err != nil {
				t.Fatal(err)
			}
			eventually(t, "every place given back", func() bool { return a.streams.Load() == 0 && a.inflight.Load() == 0 })
			if got := limit.calls(); len(got) != 1 {
				t.Errorf("the limit observed %d calls, want 1: the unary call, not the stream", len(got))
			}
		})
	}
}

// At StopTimeout the streams still open are ended: their handlers see
// their contexts end, and their callers get Unavailable, to open them again
// on another instance; a handler that ignores its context is cut off.
func TestInstanceEndsOpenStreamsUnavailable(t *testing.T) {
	const stopTimeout = 300 * time.Millisecond
	stuck := make(chan struct{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Limits{}
	s := l.NewServer()
	s.RegisterService(watchDesc(func(in *wrapperspb.BytesValue, stream grpc.ServerStream) error {
		if err := stream.SendMsg(in); err != nil {
			return err
		}
		ctx := stream.Context()
		switch string(in.GetValue()) {
		case "returns its context's error":
			<-ctx.Done()
			return ctx.Err()
		case "returns nil":
			<-ctx.Done()
			return nil
		case "ignores its context":
			<-stuck
		case "ends when leaving":
			<-Leaving(ctx)
		}
		return nil
	}), nil)
	in := &Instance{Server: s, Listener: l.Listener(lis), Drain: time.Nanosecond, StopTimeout: stopTimeout, Logger: log.NewNopLogger()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	defer close(stuck) // before Run is waited for
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	eventually(t, "serving", func() bool {
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
	})

	kinds := []string{"returns its context's error", "returns nil", "ignores its context", "ends when leaving"}
	type end struct {
		kind  string
		err   error
		after time.Duration
	}
	ends := make(chan end, len(kinds))
	var stopped atomic.Pointer[time.Time]
	for _, kind := range kinds {
		st, err := openWatch(context.Background(), conn, kind)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			err := untilEnd(st)
			ends <- end{kind, err, time.Since(*stopped.Load())}
		}()
	}
	now := time.Now()
	stopped.Store(&now)
	cancel()
	for range kinds {
		e := <-ends
		if e.kind == "ends when leaving" {
			// Told as the graceful stop began: ended OK, well before
			// StopTimeout.
			if e.err != nil || e.after >= stopTimeout {
				t.Errorf("a stream whose handler %s ended %v after the stop began, with %v; want OK before StopTimeout (%v)", e.kind, e.after, e.err, stopTimeout)
			}
			continue
		}
		if status.Code(e.err) != codes.Unavailable {
			t.Errorf("a stream whose handler %s: %v; want Unavailable", e.kind, e.err)
		}
		if e.after < stopTimeout {
			t.Errorf("a stream whose handler %s ended %v after the stop began, before StopTimeout (%v)", e.kind, e.after, stopTimeout)
		}
		if e.kind != "ignores its context" && !strings.Contains(status.Convert(e.err).Message(), "reopen on another instance") {
			t.Errorf("a stream whose handler %s: %q; want the server's word to reopen it elsewhere", e.kind, status.Convert(e.err).Message())
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		done <- nil // for the deferred wait
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s")
	}
}

// StreamWorkers keeps that many goroutines to run calls on from
// NewServer, and they end with the server; negative keeps none.
func TestStreamWorkers(t *testing.T) {
	// The workers of s, wherever they are in their loop: a goroutine's
	// trace shows its method's receiver, s's *grpc.Server, so the workers
	// of other tests' servers (32 each by default) do not count.
	workers := func(s *GRPCServer) int {
		var b strings.Builder
		_ = pprof.Lookup("goroutine").WriteTo(&b, 2) // one stack per goroutine
		return strings.Count(b.String(), fmt.Sprintf("grpc.(*Server).serverWorker(%p)", s.Server))
	}
	for _, c := range []struct {
		workers, want int
	}{{5, 5}, {-1, 0}} {
		s := Limits{StreamWorkers: c.workers}.NewServer()
		// A worker shows once it has run: give none a moment to show.
		eventually(t, fmt.Sprintf("StreamWorkers %d: %d workers", c.workers, c.want), func() bool { return workers(s) == c.want })
		time.Sleep(50 * time.Millisecond)
		if have := workers(s); have != c.want {
			t.Errorf("StreamWorkers %d: %d workers, want %d", c.workers, have, c.want)
		}
		s.Stop()
		eventually(t, "the workers gone", func() bool { return workers(s) == 0 })
	}
	if have, want := (Limits{}).WithDefaults().StreamWorkers, min(16*runtime.GOMAXPROCS(0), DefaultLimits.MaxCallsInFlight); have != want {
		t.Errorf("default StreamWorkers %d, want %d", have, want)
	}
}

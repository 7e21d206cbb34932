package bench

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/ctxtime"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/sd"
)

// The stream benchmark: how many streams fit on how many instances, and
// how fast they open.
const (
	streamRounds  = 10  // interleaved rounds of opens
	streamBlock   = 300 // opens per row in a round
	streamWorkers = 8   // goroutines opening at once, par
	streamsOpen   = 300 // long-lived streams opened at once, for the shares
	streamReps    = 5   // times each share is measured
	streamSlowBy  = 50 * time.Millisecond
	// streamUnaryRate is the unary calls a second on the same ClientConn
	// while the streams open with slow-unary: what tells the balancer an
	// instance is slow.
	streamUnaryRate = 200
)

// streamServer is an in-process instance of grpc-go's interop TestService:
// a streaming output call sends what it is asked for, the first message
// after firstDelay; a unary call answers after unaryDelay. It counts the
// streams open on it.
type streamServer struct {
	testgrpc.UnimplementedTestServiceServer
	addr       string
	open       atomic.Int64 // streams open on it now
	unary      atomic.Int64 // unary calls it answered
	unaryDelay atomic.Int64 // ns
	firstDelay atomic.Int64 // ns
}

func (s *streamServer) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if !ctxtime.Sleep(ctx, time.Duration(s.unaryDelay.Load())) {
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	s.unary.Add(1)
	return &testgrpc.SimpleResponse{Hostname: s.addr}, nil
}

func (s *streamServer) StreamingOutputCall(req *testgrpc.StreamingOutputCallRequest, stream testgrpc.TestService_StreamingOutputCallServer) error {
	s.open.Add(1)
	defer s.open.Add(-1)
	ctx := stream.Context()
	if !ctxtime.Sleep(ctx, time.Duration(s.firstDelay.Load())) {
		return ctx.Err()
	}
	for _, p := range req.GetResponseParameters() {
		if !ctxtime.Sleep(ctx, time.Duration(p.GetIntervalUs())*time.Microsecond) {
			return ctx.Err()
		}
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: []byte(s.addr)}}); err != nil {
			return err
		}
	}
	return nil
}

// startStreamServers starts n stream servers and registers them with
// agent as service (no checks: passing at once).
func startStreamServers(tb testing.TB, agent *testenv.Agent, service string, n int) []*streamServer {
	tb.Helper()
	c := agent.API()
	var out []*streamServer
	var ids []string
	for i := range n {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		s := &streamServer{addr: lis.Addr().String()}
		srv := grpc.NewServer()
		testgrpc.RegisterTestServiceServer(srv, s)
		go func() { _ = srv.Serve(lis) }()
		tb.Cleanup(srv.Stop)
		id := fmt.Sprintf("%s-%d", service, i)
		if err := registerService(c, service, id, s.addr, false); err != nil {
			tb.Fatal(err)
		}
		out = append(out, s)
		ids = append(ids, id)
	}
	agent.WaitPassing(service, ids...)
	return out
}

// longStream asks for a message at once and another in a minute: a
// stream that stays open until its caller ends it.
var longStream = &testgrpc.StreamingOutputCallRequest{ResponseParameters: []*testgrpc.ResponseParameters{{IntervalUs: 0}, {IntervalUs: 60e6}}}

// openStream opens a long stream and waits for its first message: then it
// is open on its instance. cancel closes it.
func openStream(ctx context.Context, tc testgrpc.TestServiceClient) (cancel func(), err error) {
	ctx, cancel = context.WithCancel(ctx)
	st, err := tc.StreamingOutputCall(ctx, longStream)
	if err == nil {
		_, err = st.Recv()
	}
	if err != nil {
		cancel()
		return nil, err
	}
	return cancel, nil
}

type streamRow struct {
	name string
	tc   testgrpc.TestServiceClient
}

// BenchmarkStreams measures the gRPC-native face's server streams (grpc-go's
// interop StreamingOutputCall) over 3 in-process instances registered in a
// Consul dev agent, through client.NewConn's ClientConn by round robin
// (conn-rr) and by p2c (conn-p2c), beside one plain ClientConn with
// grpc-go's round_robin over the same addresses (raw-rr):
//
//   - opens a second: open a stream, take its first message, close it
//     (cancel), sequentially and from 8 goroutines, the rows interleaved in
//     rounds as in BenchmarkOverheadInterleaved ("<mode>/<row>-opens/s");
//   - even: 300 long-lived streams opened at once on 3 equal instances,
//     the most streams one instance holds over the mean, 1 for a perfect
//     spread ("even/<row>-max/mean", the median of 5 times, and
//     "even/<row>-worst_max/mean");
//   - one instance slow: the same 300 streams while one instance answers
//     unary calls 50ms late and the ClientConn makes 200 unary calls a
//     second (slow-unary), or while it sends each stream's first message
//     50ms late and there are no unary calls (slow-first); the share of the
//     streams it holds, a third for an even spread ("<case>/<row>-share",
//     the median of 5 times), and with slow-unary the share of the unary
//     calls it answered ("slow-unary/<row>-unary_share"). slow-unary-1by1
//     is slow-unary with the streams opened one after another. Each case
//     has ClientConns of its own.
//
// Run with -benchtime 1x.
func BenchmarkStreams(b *testing.B) {
	agent := testenv.Consul(b)
	servers := startStreamServers(b, agent, "streams", 3)
	rows, closeRows := streamRows(b, agent, servers)
	for _, mode := range []string{"seq", "par"} {
		for name, rate := range streamOpens(b, rows, mode) {
			b.ReportMetric(rate, mode+"/"+name+"-opens/s")
		}
	}
	for _, row := range rows {
		var spread []float64
		for range streamReps {
			n := openMany(b, row, servers, false)
			spread = append(spread, float64(slices.Max(n))/(float64(streamsOpen)/float64(len(n))))
		}
		slices.Sort(spread)
		b.ReportMetric(spread[len(spread)/2], "even/"+row.name+"-max/mean")
		b.ReportMetric(spread[len(spread)-1], "even/"+row.name+"-worst_max/mean")
	}
	closeRows()
	// Each slow case on ClientConns of its own: what the instances' scores
	// learnt in one case (or in the opens above) is not the next one's.
	for _, slow := range []string{"slow-unary", "slow-unary-1by1", "slow-first"} {
		rows, closeRows := streamRows(b, agent, servers)
		for _, row := range rows {
			var shares, unary []float64
			for range streamReps {
				share, unaryShare := slowShare(b, row, servers, slow)
				shares = append(shares, share)
				unary = append(unary, unaryShare)
			}
			slices.Sort(shares)
			slices.Sort(unary)
			b.ReportMetric(shares[len(shares)/2], slow+"/"+row.name+"-share")
			if slow != "slow-first" {
				b.ReportMetric(unary[len(unary)/2], slow+"/"+row.name+"-unary_share")
			}
		}
		closeRows()
	}
	b.ReportMetric(float64(streamsOpen), "streams_open")
	b.ReportMetric(ms(streamSlowBy), "slow_by_ms")
}

// streamRows makes the rows' ClientConns over servers, registered with
// agent, and opens 100 streams through each: connections up, discovery
// settled. The closer closes them.
func streamRows(b *testing.B, agent *testenv.Agent, servers []*streamServer) ([]streamRow, func()) {
	var addrs []string
	for _, s := range servers {
		addrs = append(addrs, s.addr)
	}
	var conns []*grpc.ClientConn
	newConn := func(balancer string) *grpc.ClientConn {
		conn, err := client.NewConn(client.Config{Consul: sd.ConsulConfig{Address: agent.HTTPAddr}, Service: "streams", CallConfig: client.CallConfig{Balancer: balancer}})
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, conn)
		return conn
	}
	raw := roundRobinConn(b, addrs)
	conns = append(conns, raw)
	rows := []streamRow{
		{"raw-rr", testgrpc.NewTestServiceClient(raw)},
		{"conn-rr", testgrpc.NewTestServiceClient(newConn(client.RoundRobinName))},
		{"conn-p2c", testgrpc.NewTestServiceClient(newConn(client.P2CName))},
	}
	for _, row := range rows {
		for range 100 {
			cancel, err := openStream(context.Background(), row.tc)
			if err != nil {
				b.Fatalf("%s: %v", row.name, err)
			}
			cancel()
		}
	}
	return rows, func() {
		for _, conn := range conns {
			conn.Close()
		}
	}
}

// streamOpens opens, takes the first message of and closes streams
// through each row, in interleaved rounds, and returns each row's opens a
// second.
func streamOpens(b *testing.B, rows []streamRow, mode string) map[string]float64 {
	ctx := context.Background()
	workers := 1
	if mode == "par" {
		workers = streamWorkers
	}
	total := make([]time.Duration, len(rows))
	for range streamRounds {
		for i, row := range rows {
			start := time.Now()
			var wg sync.WaitGroup
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range streamBlock / workers {
						cancel, err := openStream(ctx, row.tc)
						if err != nil {
							b.Errorf("%s: %v", row.name, err)
							return
						}
						cancel()
					}
				}()
			}
			wg.Wait()
			total[i] += time.Since(start)
		}
	}
	out := map[string]float64{}
	for i, row := range rows {
		opens := streamRounds * (streamBlock / workers) * workers
		out[row.name] = float64(opens) / total[i].Seconds()
	}
	return out
}

// openMany opens streamsOpen long streams through row, at once or one by
// one, waits until each has its first message, and returns how many each
// server holds; then it closes them and waits until the servers have let
// them go.
func openMany(b *testing.B, row streamRow, servers []*streamServer, oneByOne bool) []int64 {
	cancels := make([]func(), streamsOpen)
	open := func(i int) {
		cancel, err := openStream(context.Background(), row.tc)
		if err != nil {
			b.Errorf("%s: %v", row.name, err)
			return
		}
		cancels[i] = cancel
	}
	var wg sync.WaitGroup
	for i := range streamsOpen {
		if oneByOne {
			open(i)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			open(i)
		}()
	}
	wg.Wait()
	var n []int64
	for _, s := range servers {
		n = append(n, s.open.Load())
	}
	for _, cancel := range cancels {
		if cancel != nil {
			cancel()
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, s := range servers {
		for s.open.Load() != 0 {
			if time.Now().After(deadline) {
				b.Fatalf("%s: %s still holds %d streams 10s after they were closed", row.name, s.addr, s.open.Load())
			}
			time.Sleep(time.Millisecond)
		}
	}
	return n
}

// slowShare makes servers[0] slow as slow says, opens streamsOpen streams
// through row (one by one with slow-unary-1by1, else at once), and returns
// the share of them it holds. With slow-unary, unary calls go through the
// same ClientConn for a second before and while the streams open, and it
// returns the share of those it answered too.
func slowShare(b *testing.B, row streamRow, servers []*streamServer, slow string) (share, unaryShare float64) {
	slowest := servers[0]
	switch slow {
	case "slow-unary", "slow-unary-1by1":
		slowest.unaryDelay.Store(int64(streamSlowBy))
		defer slowest.unaryDelay.Store(0)
		before := unaryCounts(servers)
		stop := unaryLoad(b, row)
		time.Sleep(time.Second)
		defer func() {
			stop()
			after := unaryCounts(servers)
			var total int64
			for i := range after {
				total += after[i] - before[i]
			}
			unaryShare = float64(after[0]-before[0]) / float64(max(total, 1))
		}()
	case "slow-first":
		slowest.firstDelay.Store(int64(streamSlowBy))
		defer slowest.firstDelay.Store(0)
	}
	n := openMany(b, row, servers, slow == "slow-unary-1by1")
	var total int64
	for _, v := range n {
		total += v
	}
	return float64(n[0]) / float64(max(total, 1)), 0
}

func unaryCounts(servers []*streamServer) []int64 {
	var n []int64
	for _, s := range servers {
		n = append(n, s.unary.Load())
	}
	return n
}

// unaryLoad makes streamUnaryRate unary calls a second through row, each
// on its own goroutine, until the returned stop, which waits for them.
func unaryLoad(b *testing.B, row streamRow) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second / streamUnaryRate)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := row.tc.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil && ctx.Err() == nil {
					b.Errorf("%s: unary call: %v", row.name, err)
				}
			}()
		}
	}()
	return func() { cancel(); wg.Wait() }
}

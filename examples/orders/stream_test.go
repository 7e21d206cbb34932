package orders_test

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/examples/orders"
	"github.com/trimkit/trimkit/examples/orders/orderspb"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/sd"
)

// The streaming test's schedule, in calls of its open loop at streamRate
// calls a second: a fourth server starts, the first gets SIGTERM, a fifth
// starts, the second gets SIGKILL, the third SIGSTOP; the load goes on
// long enough for the frozen instance's streams to move.
const (
	streamRate    = 200
	streamCalls   = 3200 // 16s
	watchers      = 12
	startFourthAt = 300
	streamTermAt  = 400
	startFifthAt  = 700
	streamKillAt  = 800
	streamStopAt  = 1200
	// settled is when every watch has had time to move off the frozen
	// instance: its check fails within a second or two, and its
	// connection closes after the client's grace period (2s), or, when
	// its leaving looks like a mass disappearance (two instances left
	// within the fail-static window), once it has failed calls held.
	settled = 2800
)

// TestStreamsAndUnaryCallsThroughFaults runs the orders example on a real
// agent through one ClientConn of client.NewConn and the generated client:
// an open loop of GetOrder and CreateOrder calls, and watchers that each
// keep a WatchOrders stream open (orders.Watch), while one server gets
// SIGTERM, one SIGKILL and one SIGSTOP (two more start, so that the
// service always has instances). No GetOrder fails; a CreateOrder may fail
// only after one attempt whose outcome is unknown, on the killed or frozen
// instance; a stream fails only if it was open on the killed or frozen
// instance, those on the SIGTERMed one end OK, and every watcher, its
// stream opened again elsewhere, gets orders at the end.
func TestStreamsAndUnaryCallsThroughFaults(t *testing.T) {
	agent := testenv.Consul(t)
	bin := bins.Path(t, "github.com/trimkit/trimkit/examples/orders/server")
	start := func() *server { return startServer(t, bin, agent.HTTPAddr) }
	servers := []*server{start(), start(), start()}
	agent.WaitPassing("orders", servers[0].id, servers[1].id, servers[2].id)
	term, kill, frozen := servers[0], servers[1], servers[2]
	t.Cleanup(func() { _ = frozen.p.Signal(syscall.SIGCONT) })

	conn, err := client.NewConn(client.Config{
		Consul:  sd.ConsulConfig{Address: agent.HTTPAddr},
		Service: "orders",
		CallConfig: client.CallConfig{
			Balancer: client.P2CName,
			Retry:    client.RetryConfig{Idempotent: orders.Idempotent, Timeout: 2 * time.Second},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	oc := orderspb.NewOrdersClient(conn)
	// A few calls first: the connections to every instance are up when
	// the watchers open their streams, which spread over them.
	for range 30 {
		if _, err := oc.GetOrder(t.Context(), &orderspb.GetOrderRequest{Id: "none"}); status.Code(err) != codes.NotFound {
			t.Fatalf("GetOrder: %v; want NotFound", err)
		}
	}

	// The watchers.
	var (
		wmu      sync.Mutex
		ends     []orders.StreamEnd
		lastSeen = make([]time.Time, watchers)
		wwg      sync.WaitGroup
	)
	wctx, stopWatching := context.WithCancel(context.Background())
	defer stopWatching()
	for i := range watchers {
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			err := orders.Watch(wctx, conn, &orderspb.WatchOrdersRequest{}, func(*orderspb.Order) {
				wmu.Lock()
				lastSeen[i] = time.Now()
				wmu.Unlock()
			}, func(e orders.StreamEnd) {
				t.Logf("watcher %d: stream on %s ended after %d orders: %v", i, e.Instance, e.Orders, e.Err)
				wmu.Lock()
				ends = append(ends, e)
				wmu.Unlock()
			})
			if !errors.Is(err, context.Canceled) {
				t.Errorf("watcher %d: %v", i, err)
			}
		}()
	}

	// The unary load, open loop.
	type failure struct {
		create bool
		err    error
		addr   string
		at     time.Time
	}
	var (
		mu       sync.Mutex
		failures []failure
		ids      []string
		wg       sync.WaitGroup
		killedAt time.Time
		frozenAt time.Time
		began    = time.Now()
	)
	ticker := time.NewTicker(time.Second / streamRate)
	for i := range streamCalls {
		<-ticker.C
		switch i {
		case startFourthAt, startFifthAt:
			servers = append(servers, start())
		case streamTermAt:
			if err := term.p.Signal(syscall.SIGTERM); err != nil {
				t.Error(err)
			}
		case streamKillAt:
			killedAt = time.Now()
			kill.p.Kill()
		case streamStopAt:
			frozenAt = time.Now()
			if err := frozen.p.Signal(syscall.SIGSTOP); err != nil {
				t.Error(err)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var p peer.Peer
			create := i%4 == 0
			var o *orderspb.Order
			var err error
			if create {
				o, err = oc.CreateOrder(ctx, &orderspb.CreateOrderRequest{RequestId: rand.Text(), Item: "widget", Quantity: 1}, grpc.Peer(&p))
			} else {
				mu.Lock()
				id := "none"
				if len(ids) > 0 {
					id = ids[i%len(ids)]
				}
				mu.Unlock()
				_, err = oc.GetOrder(ctx, &orderspb.GetOrderRequest{Id: id}, grpc.Peer(&p))
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && create:
				ids = append(ids, o.GetId())
			case status.Code(err) == codes.NotFound: // an answer: another instance's order
			case err != nil:
				f := failure{create: create, err: err, at: time.Now()}
				var re *client.RetryError
				if errors.As(err, &re) {
					f.addr = re.Instance
				}
				failures = append(failures, f)
			}
		}()
	}
	ticker.Stop()
	wg.Wait()
	end := time.Now()
	stopWatching()
	wwg.Wait()

	for _, f := range failures {
		var re *client.RetryError
		switch {
		case !f.create:
			t.Errorf("GetOrder failed at %v: %v", f.at.Sub(began), f.err)
		case !errors.As(f.err, &re) || !re.OutcomeUnknown || re.Attempts != 1:
			t.Errorf("CreateOrder failed other than after one attempt whose outcome is unknown: %v", f.err)
		case f.addr != kill.addr && f.addr != frozen.addr:
			t.Errorf("CreateOrder failed on %s, neither the killed %s nor the frozen %s: %v", f.addr, kill.addr, frozen.addr, f.err)
		case f.at.Before(killedAt):
			t.Errorf("CreateOrder failed at %v, before the kill at %v: %v", f.at.Sub(began), killedAt.Sub(began), f.err)
		}
	}
	var failed, okOnTerm, onKilled, onFrozen int
	for _, e := range ends {
		switch {
		case e.Err == nil && e.Instance == term.addr:
			okOnTerm++
		case e.Err == nil:
		case e.Instance == kill.addr:
			onKilled++
		case e.Instance == frozen.addr:
			onFrozen++
		default:
			failed++
			t.Errorf("a stream on %s failed: %v", e.Instance, e.Err)
		}
	}
	for i, seen := range lastSeen {
		if settle := frozenAt.Add(time.Duration(settled-streamStopAt) * time.Second / streamRate); seen.Before(settle) {
			t.Errorf("watcher %d got its last order %v into the load, before %v: its stream did not move", i, seen.Sub(began), settle.Sub(began))
		}
	}
	t.Logf("%d calls in %v; %d failed (creates whose outcome is unknown: they may have reached the killed or frozen instance); "+
		"stream ends: %d OK from the SIGTERMed instance, %d failed on the killed one, %d on the frozen one, %d elsewhere",
		streamCalls, end.Sub(began).Round(time.Millisecond), len(failures), okOnTerm, onKilled, onFrozen, failed)
}

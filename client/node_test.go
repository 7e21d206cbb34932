package client

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/internal/overload"
)

func testNode(t *testing.T) *Node {
	t.Helper()
	o, err := EndpointerConfig{}.options()
	if err != nil {
		t.Fatal(err)
	}
	e := newEndpointer(kitsd.FixedInstancer(nil), nil, log.NewNopLogger(), o)
	t.Cleanup(func() { e.Close() })
	return newNode(e, "x", nil, nil)
}

func TestPeakEWMA(t *testing.T) {
	n := testNode(t)
	ms := float64(time.Millisecond)
	n.observe(1*ms, 0)
	if have := n.estimate(0); have != 1*ms {
		t.Fatalf("first sample: want 1ms, have %v", time.Duration(have))
	}
	// A peak is taken at once.
	n.observe(20*ms, int64(time.Millisecond))
	if have := n.estimate(int64(time.Millisecond)); have != 20*ms {
		t.Errorf("peak: want 20ms, have %v", time.Duration(have))
	}
	// A lower sample pulls it down, the more so the longer since the last.
	n.observe(1*ms, int64(time.Millisecond+decayTime))
	have := n.estimate(int64(time.Millisecond + decayTime))
	if have >= 20*ms || have <= 1*ms {
		t.Errorf("after a decay time: want between 1ms and 20ms, have %v", time.Duration(have))
	}
	// Unpicked, the estimate decays by e every decayTime.
	later := n.estimate(int64(time.Millisecond + 3*decayTime))
	if later >= have/7 {
		t.Errorf("two decay times later: want under %v, have %v", time.Duration(have/7), time.Duration(later))
	}
}

func TestCostCountsCallsInFlightAndTheirAge(t *testing.T) {
	ms := int64(time.Millisecond)
	a, b := testNode(t), testNode(t)
	// Cold: free to try once, then penalised while the probe is out.
	if have := a.cost(0); have != 0 {
		t.Errorf("cold and idle: want 0, have %v", have)
	}
	a.inflight.Add(1)
	a.startSum.Add(0)
	if have := a.cost(ms); have < coldPenalty {
		t.Errorf("cold with a call in flight: want the penalty, have %v", have)
	}
	a.inflight.Add(-1)

	a.observe(float64(ms), 0)
	b.observe(float64(ms), 0)
	// Same latency: the one with calls in flight costs more.
	b.inflight.Add(2)
	b.startSum.Add(2 * ms)
	if !(a.cost(ms) < b.cost(ms)) {
		t.Errorf("calls in flight: a %v, b %v", a.cost(ms), b.cost(ms))
	}
	// Open streams do not: an idle stream costs its instance nothing.
	without := a.cost(ms)
	a.streams.Add(5)
	if have := a.cost(ms); have != without {
		t.Errorf("five streams open, no call in flight: cost %v, want %v as without them", have, without)
	}
	a.streams.Add(-5)
	// Calls in flight much older than the estimate (a hung instance) make
	// it cost more still, before any of them ends.
	early := b.cost(2 * ms)
	late := b.cost(500 * ms)
	if late < 100*early {
		t.Errorf("aging calls in flight: cost %v at 2ms, %v at 500ms", early, late)
	}
}

func TestClassify(t *testing.T) {
	live := context.Background()
	cancelled := func(cause error) context.Context {
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(cause)
		return ctx
	}
	for _, tc := range []struct {
		ctx  context.Context
		err  error
		want outcome
	}{
		{live, nil, answered},
		{live, status.Error(codes.InvalidArgument, "x"), answered},
		{live, status.Error(codes.NotFound, "x"), answered},
		{live, status.Error(codes.ResourceExhausted, "message too large"), answered},
		{live, status.Error(codes.Internal, "x"), failed},
		{live, status.Error(codes.DeadlineExceeded, "the instance's own deadline"), failed},
		{live, errors.New("no gRPC status: Unknown"), failed},
		{live, overload.NewMarker().Shed("busy"), shed},
		{live, status.Error(codes.Unavailable, "x"), failed},
		{live, status.Error(codes.Canceled, "closed under the call"), failed},
		{cancelled(errAttemptTimeout), status.Error(codes.Canceled, "x"), timedOut},
		{cancelled(errOutpaced), status.Error(codes.Canceled, "x"), outpaced},
		{cancelled(errHedgeUnneeded), status.Error(codes.Canceled, "x"), abandoned},
		{cancelled(context.Canceled), status.Error(codes.Canceled, "x"), abandoned},
	} {
		if have := classify(tc.ctx, tc.err, DefaultClassify); have != tc.want {
			t.Errorf("%v / %v: want %v, have %v", context.Cause(tc.ctx), tc.err, tc.want, have)
		}
	}
}

func TestP2CComparesReportedLoadsOfComparableInstances(t *testing.T) {
	a, c := testNode(t), testNode(t)
	now := a.now()
	// Latencies of a tenth of a second: a pause of the test's (a starved
	// CPU, -race) must not age the attempts in flight past twice an
	// estimate, which would make latency decide.
	u := float64(100 * time.Millisecond) // the unit of latency
	a.observe(1*u, now)
	c.observe(1.5*u, now)
	// No reports: latency decides.
	if lessLoadedOrCheaper(a, c) != a || lessLoadedOrCheaper(c, a) != a {
		t.Fatal("without reports: want the faster")
	}
	// Fresh reports: the less loaded, though slower.
	a.storeLoad(0.8, 10, now)
	c.storeLoad(0.2, 10, now)
	if lessLoadedOrCheaper(a, c) != c || lessLoadedOrCheaper(c, a) != c {
		t.Error("fresh reports 0.8 and 0.2: want the less loaded")
	}
	// This client's attempts started since the report count, over the
	// limit: 0.2 + 7/10 is more than 0.8.
	var starts []int64
	for range 7 {
		starts = append(starts, c.begin())
	}
	if lessLoadedOrCheaper(a, c) != a {
		t.Error("0.2 plus 7 started since, of 10, against 0.8: want the other")
	}
	// A new report counts those in flight: they do not count again, nor
	// when they end.
	now = c.now()
	c.storeLoad(0.2, 10, now)
	if lessLoadedOrCheaper(a, c) != c {
		t.Error("0.2 with this client's 7 in flight counted in it, against 0.8: want it")
	}
	for _, start := range starts {
		c.end(context.Background(), start, nil)
	}
	if have := c.sinceLoad.Load(); have != 0 {
		t.Errorf("attempts since the report, after the 7 it counted ended: %d, want 0", have)
	}
	c.begin()
	if have := c.sinceLoad.Load(); have != 1 {
		t.Errorf("attempts since the report, after one more started: %d, want 1", have)
	}
	// Equal loads: the first of the two, not the faster. Both reports are
	// stamped a second ahead, so that no time the test takes (a starved
	// CPU, -race) fades one more than the other: a report older than its
	// instance's latency estimate fades, and the two estimates differ.
	ahead := a.now() + int64(time.Second)
	a.storeLoad(0.8, 10, ahead)
	c.storeLoad(0.8, 10, ahead)
	if lessLoadedOrCheaper(c, a) != c || lessLoadedOrCheaper(a, c) != a {
		t.Error("equal loads: want the first of the two (random), not the faster")
	}
	// Much slower (3x): latency decides whatever the loads.
	c.storeLoad(0.1, 10, now)
	c.observe(30*u, now)
	if lessLoadedOrCheaper(a, c) != a || lessLoadedOrCheaper(c, a) != a {
		t.Error("an instance 30 times slower: want the faster, whatever its load")
	}
	// A stale report: latency decides.
	b := testNode(t)
	b.observe(1*u, now)
	b.storeLoad(0.9, 10, now-int64(2*loadFresh))
	a.storeLoad(0.1, 10, now)
	b.observe(0.5*u, now) // faster, and its report is old
	if lessLoadedOrCheaper(a, b) != b {
		t.Error("a stale report: want latency to decide")
	}
}

func TestShedCountsInTheCostNotTowardsEjection(t *testing.T) {
	n := testNode(t)
	ctx := context.Background()
	start := n.begin()
	n.end(ctx, start, overload.NewMarker().Shed("busy"))
	if n.failures.Load() != 0 {
		t.Errorf("a shed attempt counted %d failures towards ejection", n.failures.Load())
	}
	if n.reportedLoad() < 1 {
		t.Errorf("load after a shed = %v, want full (1)", n.reportedLoad())
	}
	if est := n.estimate(n.now()); est < failurePenalty*0.99 {
		t.Errorf("latency estimate after a shed = %v, want at least the failure penalty", time.Duration(est))
	}
}

func TestAReportFadesOnceItsCallsHaveHadTimeToEnd(t *testing.T) {
	n := testNode(t)
	now := n.now()
	ms := float64(time.Millisecond)
	n.observe(1*ms, now)
	n.storeLoad(0.8, 10, now)
	if cost, ok := n.loadCost(now); !ok || cost != 0.8 {
		t.Fatalf("a fresh report of 0.8: cost %v (%v), want 0.8", cost, ok)
	}
	// Five latencies later the calls it counted have ended: it fades, or
	// an instance that reported one call in flight would get no call, and
	// so no new report, for as long as the report stays fresh.
	later := now + int64(5*time.Millisecond)
	if cost, ok := n.loadCost(later); !ok || cost > 0.8*math.Exp(-3.9) {
		t.Errorf("a report 5 latencies old: cost %v (%v), want under %v", cost, ok, 0.8*math.Exp(-3.9))
	}
}

// A stream does not go to an instance that was slow when it last answered
// only because, picked by no call since, its estimate has decayed; among
// instances alike, the one with fewer streams open takes it.
func TestFewerStreamsAvoidsAnInstanceSlowWhenLastHeard(t *testing.T) {
	slow, fast := testNode(t), testNode(t)
	ms := float64(time.Millisecond)
	slow.observe(50*ms, slow.now()-int64(11*time.Second)) // ten seconds ago, twice
	slow.observe(50*ms, slow.now()-int64(10*time.Second))
	fast.observe(1*ms, fast.now())
	for range 5 {
		fast.beginStream()
	}
	if slow.latency(slow.now()) > fast.latency(fast.now()) {
		t.Fatal("the test wants the slow instance's estimate decayed below the fast one's")
	}
	if got := fewerStreams(slow, fast); got != fast {
		t.Errorf("fewerStreams picked the instance that answered in 50ms when last heard, over one that answers in 1ms with 5 streams open")
	}
	alike := testNode(t)
	alike.observe(1.2*ms, alike.now())
	if got := fewerStreams(fast, alike); got != alike {
		t.Errorf("fewerStreams picked the instance with 5 streams open over a like one with none")
	}
}

// One late answer is not enough to keep streams off an instance: a
// pause of the client's own or a server's first call can make any
// instance answer late once, and P2C, which then stops asking it, would
// never learn otherwise. Two in a row are.
func TestFewerStreamsNeedsTwoSlowAnswers(t *testing.T) {
	ms := float64(time.Millisecond)
	once, fast := testNode(t), testNode(t)
	once.observe(1*ms, once.now())
	once.observe(30*ms, once.now())
	fast.observe(1*ms, fast.now())
	fast.observe(1*ms, fast.now())
	fast.beginStream()
	if got := fewerStreams(fast, once); got != once {
		t.Errorf("fewerStreams kept a stream off an instance that answered late once, for one with a stream open")
	}
	once.observe(30*ms, once.now())
	if got := fewerStreams(fast, once); got != fast {
		t.Errorf("fewerStreams sent a stream to an instance whose last two answers took 30ms, over one that answers in 1ms")
	}
}

// Of two instances alike but for the streams open on them, unary calls go
// to either: counted as calls in flight, the streams sent every unary call
// to the instance with fewer (examples/orders' fault test).
func TestStreamsDoNotStarveAnInstanceOfUnaryCalls(t *testing.T) {
	ms := float64(time.Millisecond)
	a, b := testNode(t), testNode(t)
	a.observe(ms, 0)
	b.observe(ms, 0)
	a.streams.Add(7)
	b.streams.Add(5)
	picks := map[*Node]int{}
	for range 1000 {
		picks[pickTwo([]*Node{a, b}, nil, cheaper)]++
	}
	if picks[a] < 400 || picks[b] < 400 {
		t.Errorf("unary picks: %d to the instance with 7 streams, %d to the one with 5; want about half each", picks[a], picks[b])
	}
}

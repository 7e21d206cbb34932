package client

import (
	"context"
	"io"
	"math"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/endpoint"
	"google.golang.org/grpc/connectivity"

	"github.com/trimkit/trimkit/internal/overload"
)

const (
	// decayTime is how fast a node's latency estimate forgets without new
	// samples: a peak decays by e every decayTime. Finagle and go-zero use
	// 10s, kratos 600ms. 2s: a node that was slow is tried again (one call)
	// every few seconds, so a recovered one is back soon and a still slow
	// one costs a call now and then (`make bench`, gray failure, measured
	// 1s and 2s with and without minSampleWeight).
	decayTime = 2 * time.Second
	// coldPenalty is the cost of a node that has not answered yet while
	// one call to it is in flight: it gets exactly one probe at a time
	// until it answers (Finagle's rule), neither starved nor flooded.
	coldPenalty = 1e15
	// minSampleWeight is the least weight a sample below the estimate gets:
	// a busy node sheds a peak within a few dozen samples, not only with
	// time. A pause of the client's own (a GC, a starved CPU) delays every
	// call in flight and peaks every busy node at once; without the floor
	// they stay peaked for about decayTime while an idle slow node, whose
	// estimate only decays, looks cheaper and gets a burst of calls.
	minSampleWeight = 0.1
	// failurePenalty is the least latency a failed attempt counts as: a
	// failure costs its caller another attempt, as a timeout does, so a
	// node that fails fast must not look fast.
	failurePenalty = float64(100 * time.Millisecond)
	// loadFresh is how long the load an instance reported in an answer
	// stands for its load now. At the rates where other callers' load
	// matters, answers come every few milliseconds; past a second, a
	// report says little and the balancer goes by latency alone.
	loadFresh = time.Second
	// comparableLatency is how much slower than another an instance may
	// be, by its latency estimate, for the two to be compared by load: an
	// instance much slower than its peer is in trouble (a gray failure)
	// whatever its load says, and latency decides.
	comparableLatency = 2
)

// Node is one instance an Endpointer holds, with what the balancers
// know of it: its connection's state, its attempts in flight, its latency,
// whether it is ejected. It lives as long as its instance stays in
// discovery, across any number of updates, so its scores survive them.
// Calling its endpoint records how each attempt went, whichever Balancer
// picked it. Everything a call touches is atomic: no lock on the call path.
type Node struct {
	instance string
	e        endpoint.Endpoint // the Factory's
	closer   io.Closer
	owner    *Endpointer
	tracked  endpoint.Endpoint // e with bookkeeping: what callers call

	state    atomic.Int32 // connectivity.State of its connection; Ready when unknown
	wasReady atomic.Bool  // its connection has been READY at least once
	failing  atomic.Bool  // its connection failed since it was last READY

	inflight atomic.Int64 // attempts in flight
	startSum atomic.Int64 // sum of their start times, ns since owner.epoch
	// streams are the streaming calls open on it (a ClientConn's, see
	// NewConn): they count towards its load, not towards its latency.
	streams atomic.Int64

	ewma  atomic.Uint64 // peak EWMA of latency, ns, as float64 bits; 0 until the first answer
	stamp atomic.Int64  // when ewma was last updated, ns since owner.epoch
	// lastRTT is the latency of its last answer, ns; steady the lower of
	// its last two (0 until it has answered twice): what streams go by
	// (see slowness).
	lastRTT, steady atomic.Int64

	// The load the instance reported in its last answer (see
	// internal/overload): utilization and limit as float64 bits, and when
	// it came, ns since owner.epoch (0: never).
	load      atomic.Uint64
	loadLimit atomic.Uint64
	loadStamp atomic.Int64
	// sinceLoad is this client's attempts in flight to it that started
	// after its last report, which does not count them.
	sinceLoad atomic.Int64

	failures atomic.Int32 // consecutive attempts that failed as ejection counts them
	// need is how many failures in a row it takes to eject the instance
	// while its peers fail too (streakNeeded), 0 until a streak asks; the
	// success-rate sweep clears it.
	need atomic.Int32
	// okTotal and failTotal count attempts that answered (an Answer
	// included) and that failed as ejection counts them (instance
	// failures, timeouts, attempts outpaced by a hedge) since the
	// instance was first listed; marks are their values at the last two
	// sweeps (guarded by owner.mu): rates are over the window since the
	// older (see window).
	okTotal, failTotal atomic.Int64
	marks              [2]tally
	probation          atomic.Bool // readmitted after an ejection, not yet trusted
	held               atomic.Bool // removed from discovery en masse, held (see FailStatic)

	// Ejection state; guarded by owner.mu.
	ejected      bool
	ejections    int       // in a row, for the growing ejection time
	readmittedAt time.Time // when it last came back
	heldUntil    time.Time // when it is let go, while held
	probeAt      time.Time // when it is next probed, while ejected
	probeCancel  context.CancelFunc

	// band is its datacenter's place in Config.Datacenters (0 with one),
	// set before it is first published; it changes only when datacenters
	// change places (_nearest).
	band atomic.Int32
}

// Addr is the instance as discovery reported it: "host:port".
func (n *Node) Addr() string { return n.instance }

func newNode(owner *Endpointer, instance string, e endpoint.Endpoint, closer io.Closer) *Node {
	n := &Node{instance: instance, e: e, closer: closer, owner: owner}
	n.state.Store(int32(connectivity.Ready))
	n.tracked = n.call
	return n
}

// call is an attempt on the node, as callers of its endpoint make it.
func (n *Node) call(ctx context.Context, request interface{}) (interface{}, error) {
	resp, _, _, err := n.attempt(&attemptRec{Context: ctx, n: n, begun: time.Now()}, request)
	return resp, err
}

// attempt is an attempt on the node: the Factory's endpoint, with the
// bookkeeping the balancers and ejection need. It returns how it ended,
// and whether it may have been sent (see attemptRec.mayHaveSent).
// at.begun is when the attempt started.
func (n *Node) attempt(at *attemptRec, request interface{}) (interface{}, bool, outcome, error) {
	start := n.beginAt(n.reading(at.begun))
	// The connection's picker (see Factory) finds the attempt in its
	// context and tells it how each of its calls ended.
	resp, err := n.e(at, request)
	return resp, at.mayHaveSent(), n.end(at, start, err), err
}

func (n *Node) now() int64 { return int64(time.Since(n.owner.epoch)) }

// reading is t on n's clock (now's).
func (n *Node) reading(t time.Time) int64 { return int64(t.Sub(n.owner.epoch)) }

func (n *Node) begin() int64 { return n.beginAt(n.now()) }

// beginAt counts a call that started at start, on n's clock.
func (n *Node) beginAt(start int64) int64 {
	// The sum first: a cost read in between sees a call's start without
	// the call, never a call without its start (which would age it from
	// the epoch).
	n.startSum.Add(start)
	n.inflight.Add(1)
	n.sinceLoad.Add(1)
	return start
}

// outcome is how an attempt ended, as far as the instance's health goes.
type outcome int

const (
	answered  outcome = iota // a response, or an Answer (an error of the application's)
	failed                   // an InstanceFailure: Internal, Unavailable, connection closed...
	timedOut                 // the attempt's share of the retry timeout ran out
	outpaced                 // cancelled because a hedge to another instance answered first
	abandoned                // the caller gave up; says nothing of the instance
	shed                     // refused at once for overload (internal/overload): full, not broken
)

var outcomeNames = [...]string{answered: "answered", failed: "failed", timedOut: "timeout", outpaced: "outpaced", abandoned: "abandoned", shed: "shed"}

func (o outcome) String() string { return outcomeNames[o] }

// retryable says whether Retry, by the classification, tries another
// instance after an attempt that ended so.
func (o outcome) retryable() bool { return o == failed || o == timedOut || o == shed }

// classify tells how an attempt made under ctx ended with err: by what
// cancelled ctx, if anything did, else by class, the classification.
func classify(ctx context.Context, err error, class func(error) Class) outcome {
	if err == nil {
		return answered
	}
	switch attemptCause(ctx) {
	case errAttemptTimeout:
		return timedOut
	case errOutpaced:
		return outpaced
	}
	if ctx.Err() != nil {
		return abandoned
	}
	switch class(err) {
	case InstanceFailure:
		return failed
	case Shed:
		return shed
	}
	return answered
}

func (n *Node) end(ctx context.Context, start int64, err error) outcome {
	now := n.now()
	n.inflight.Add(-1)
	n.startSum.Add(-start)
	if start > n.loadStamp.Load() { // else the last report counted it
		n.sinceLoad.Add(-1)
	}
	return n.settle(ctx, err, float64(now-start), now)
}

// beginStream counts a streaming call opened on the node.
func (n *Node) beginStream() { n.streams.Add(1) }

// endStream records how a streaming call on the node ended: towards
// ejection and the balancers as any attempt, but its life, however long,
// is no latency sample.
func (n *Node) endStream(ctx context.Context, err error) outcome {
	n.streams.Add(-1)
	return n.settle(ctx, err, -1, n.now())
}

// settle records how an attempt made under ctx ended, with err, after rtt
// (negative: a stream, whose life is no latency sample), and returns it.
func (n *Node) settle(ctx context.Context, err error, rtt float64, now int64) outcome {
	o := classify(ctx, err, n.owner.ejection.Classify)
	switch o {
	case answered:
		n.okTotal.Add(1)
		if rtt >= 0 {
			n.observe(rtt, now)
		}
		if n.failures.Load() != 0 { // a read, not a write, on the common path
			n.failures.Store(0)
		}
		if n.probation.Load() {
			n.probation.Store(false) // it answered: trusted again
		}
	case failed, timedOut, outpaced:
		// As bad as a timeout for the caller, who needs another attempt:
		// the estimate jumps to at least the time it cost, so an instance
		// that fails fast does not look fast.
		n.failTotal.Add(1)
		n.observe(max(rtt, failurePenalty), now)
		if n.owner.struck(n, o) {
			markEjected(ctx)
		}
	case shed:
		// Full: as costly as a failure for the balancers, which steer
		// away until it reports room again, but no strike towards
		// ejection and no word on its health either way.
		n.observe(max(rtt, failurePenalty), now)
		n.storeLoad(max(n.reportedLoad(), 1), math.Float64frombits(n.loadLimit.Load()), now)
	case abandoned:
		// A lower bound of the latency: it may only raise the estimate.
		if rtt > n.estimate(now) {
			n.observe(rtt, now)
		}
	}
	n.owner.metrics.attempt(n.instance, o)
	return o
}

// reportLoad records the load an answer of the instance reported.
func (n *Node) reportLoad(r overload.Report) { n.storeLoad(r.Utilization, r.Limit, n.now()) }

// storeLoad records a load reported at now: it counts every attempt in
// flight to the instance that started before.
func (n *Node) storeLoad(utilization, limit float64, now int64) {
	n.load.Store(math.Float64bits(utilization))
	n.loadLimit.Store(math.Float64bits(limit))
	n.loadStamp.Store(now)
	n.sinceLoad.Store(0)
}

func (n *Node) reportedLoad() float64 { return math.Float64frombits(n.load.Load()) }

// freshLoad says whether the instance reported its load within loadFresh.
func (n *Node) freshLoad(now int64) bool { return fresh(n.loadStamp.Load(), now) }

func fresh(stamp, now int64) bool { return stamp != 0 && now-stamp <= int64(loadFresh) }

// loadCost is the instance's load for the balancers: the utilization it
// reported last, plus the attempts this client started to it since then,
// as a share of its limit (those in flight then are in the report already:
// counting them again would pull every instance towards the same calls in
// flight, whatever its capacity). ok is false without a fresh report.
func (n *Node) loadCost(now int64) (cost float64, ok bool) {
	stamp := n.loadStamp.Load()
	if !fresh(stamp, now) {
		return 0, false
	}
	cost = n.reportedLoad()
	// The calls in flight it counted end in about one latency: a report
	// older than that overstates the load, and would keep its instance
	// from the calls that bring a new one.
	if est := n.estimate(now); est > 0 && float64(now-stamp) > est {
		cost *= math.Exp(-(float64(now-stamp) - est) / est)
	}
	if limit := math.Float64frombits(n.loadLimit.Load()); limit >= 1 {
		cost += float64(max(n.sinceLoad.Load(), 0)) / limit
	}
	return cost, true
}

// latency is the latency estimate, or the mean age of the attempts in
// flight when that is larger: how slow the instance looks now.
func (n *Node) latency(now int64) float64 { return n.orAge(n.estimate(now), now) }

// orAge is est, or the mean age of the attempts in flight when that is
// larger.
func (n *Node) orAge(est float64, now int64) float64 {
	if inflight := n.inflight.Load(); inflight > 0 {
		if age := float64(now - n.startSum.Load()/inflight); age > est {
			est = age
		}
	}
	return est
}

// slowness is how slow the instance's last two answers both were, or
// the mean age of its attempts in flight when that is larger: what a
// stream's pick goes by (see fewerStreams). It does not decay, so that a
// stream does not go back to a slow instance only because P2C, sending
// it no call, has not heard from it for a while; and it takes two slow
// answers in a row, so that one late answer (a pause of the client's own,
// a server's first call) does not keep streams off a healthy instance
// that P2C then stops asking.
func (n *Node) slowness(now int64) float64 {
	return n.orAge(float64(n.steady.Load()), now)
}

// observe folds a latency sample into the peak EWMA: a sample above the
// estimate replaces it at once; one below pulls it down with a weight that
// grows with the time since the last update.
func (n *Node) observe(rtt float64, now int64) {
	if prev := n.lastRTT.Swap(int64(rtt)); prev > 0 {
		n.steady.Store(min(prev, int64(rtt)))
	}
	for {
		oldBits := n.ewma.Load()
		old := math.Float64frombits(oldBits)
		next := rtt
		if old != 0 && rtt < old {
			w := min(math.Exp(-float64(now-n.stamp.Load())/float64(decayTime)), 1-minSampleWeight)
			next = old*w + rtt*(1-w)
		}
		if n.ewma.CompareAndSwap(oldBits, math.Float64bits(next)) {
			n.stamp.Store(now)
			return
		}
	}
}

// estimate is the latency estimate at now, decayed for the time since it
// was last updated, so a node nobody picks becomes worth trying again.
func (n *Node) estimate(now int64) float64 {
	e := math.Float64frombits(n.ewma.Load())
	if e == 0 {
		return 0
	}
	return e * math.Exp(-float64(now-n.stamp.Load())/float64(decayTime))
}

// cost is what the p2c balancer compares for a unary call: the latency
// estimate, or the mean age of the attempts in flight when that is larger
// (so a node that stopped answering loses picks before any of them
// fails), times the attempts in flight plus one. A node with no estimate
// yet costs nothing until an attempt is in flight, then coldPenalty.
//
// Open streams do not weigh on it: the server does not count them as
// calls in flight either (its concurrency limit leaves them out), an idle
// watch stream costs its instance nothing, and a busy one shows in the
// latency and the load the instance reports. Counted as calls, they kept
// the unary calls of a two-instance service off the instance with more
// streams open, but for one or two a second as its estimate decayed
// (examples/orders' fault test, in CI). Streams themselves are spread by
// their own count (fewerStreams).
func (n *Node) cost(now int64) float64 {
	inflight := n.inflight.Load()
	if math.Float64frombits(n.ewma.Load()) == 0 {
		if inflight > 0 {
			return coldPenalty + float64(inflight)
		}
		return 0
	}
	return n.latency(now) * float64(inflight+1)
}

package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd/lb"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/internal/ctxtime"
	"github.com/trimkit/trimkit/sd"
)

// noEndpointsPause is how long Retry waits before trying again when the
// balancer has no endpoint, so a burst of attempts does not miss an instance
// that discovery is about to report.
const noEndpointsPause = 20 * time.Millisecond

// roundPause is the most Retry waits before an attempt on an instance the
// call has tried already (every instance known has failed it): time for a
// connection to an instance that restarted to dial again (a Factory's
// first wait is 100ms).
const roundPause = 250 * time.Millisecond

// Retry calls instances b picks, at most cfg.MaxAttempts attempts within
// cfg.Timeout overall. Each attempt gets an equal share of the time left
// (the time left divided by the attempts left) and is cancelled when it is
// used up, so one hung instance cannot use up the whole budget. After a
// failed attempt, the attempt's class says whether to try again (see
// Class: after an InstanceFailure, a Shed, an attempt's own share running
// out, or no instance found; not after an Answer, an error of the
// application's), or cfg.Retryable when it is set, and a
// call that is not idempotent (cfg.Idempotent, WithIdempotent) tries again
// only when its attempt certainly did not leave this process or was shed.
// Retries (and hedges, with cfg.HedgeAfter) must fit the retry budget: a
// call whose retry it refuses returns its failure at once. When it gives
// up, the error is a *RetryError that unwraps to the last attempt's error.
// While the instances shed calls, cfg.Throttle may refuse a call before
// its first attempt: a *ThrottledError.
//
// The attempts of a call go to distinct instances while there are any
// (Balancer.Pick). Unlike go-kit's lb.Retry, attempts run on the caller's
// goroutine (a hedge and the attempt it races are the exception) and the
// error unwraps, so status.FromError and errors.Is see the last failure.
func Retry(b Balancer, cfg RetryConfig) (endpoint.Endpoint, error) {
	if b == nil {
		return nil, errors.New("client: Retry needs a balancer")
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("retry config: %w", err)
	}
	return newRetry(b, cfg.withDefaults(), endpointAttempt).call, nil
}

func newRetry(b Balancer, cfg RetryConfig, try attempter) *retry {
	return &retry{
		b:          b,
		try:        try,
		max:        cfg.MaxAttempts,
		timeout:    cfg.Timeout,
		hedgeAfter: cfg.HedgeAfter,
		retryable:  cfg.Retryable,
		idempotent: cfg.Idempotent,
		budget:     newBudget(cfg.Budget, time.Now),
		throttle:   newThrottle(cfg.Throttle, time.Now),
		metrics:    cfg.Metrics.resolved(),
		watchdog:   newWatchdog(),
		tracer:     newTracer(cfg.TracerProvider),
	}
}

type retry struct {
	b          Balancer
	try        attempter
	max        int
	timeout    time.Duration
	hedgeAfter time.Duration
	retryable  lb.Callback
	idempotent func(request any) bool // nil: every request is
	budget     *budget                // nil: no budget
	throttle   *throttle              // nil: no throttling
	metrics    Metrics
	watchdog   *watchdog    // ends attempts at the end of their share
	tracer     trace.Tracer // nil: calls are not traced
}

// DefaultRetryable is Retry's rule under the default classification
// (DefaultClassify), in the shape of go-kit's lb.Callback, for a program
// that wraps it in a RetryConfig.Retryable of its own: try again after no
// instance was found (lb.ErrNoEndpoints), after an attempt's own share of
// the time ran out, and after an InstanceFailure or Shed. Anything else
// is the instance's answer and ends the call. n, the attempts made so far,
// does not matter to it. (With Retryable unset, Retry goes by the class
// the attempt's Endpointer gave it, Ejection.Classify's, which is this
// rule for the default classification.)
func DefaultRetryable(n int, err error) (keepTrying bool, replacement error) {
	var timeout *attemptTimeoutError
	if errors.Is(err, lb.ErrNoEndpoints) || errors.As(err, &timeout) {
		return true, nil
	}
	return DefaultClassify(err) != Answer, nil
}

type idempotentKey struct{}

type answeredKey struct{}

// WithAnswered returns a context under which a call through Retry (a
// Client's endpoint) that succeeds stores in *addr the instance that
// answered it, "host:port"; a call that fails leaves *addr as it was. It
// is the go-kit face's grpc.Peer (on a ClientConn, NewConn's, both answer).
// One call per context at a time: concurrent calls would write *addr
// together.
func WithAnswered(ctx context.Context, addr *string) context.Context {
	return context.WithValue(ctx, answeredKey{}, addr)
}

// WithIdempotent returns a context under which Retry takes a call as safe
// to send twice, or not, whatever RetryConfig.Idempotent says.
func WithIdempotent(ctx context.Context, idempotent bool) context.Context {
	return context.WithValue(ctx, idempotentKey{}, idempotent)
}

func (r *retry) isIdempotent(ctx context.Context, request any) bool {
	if v, ok := ctx.Value(idempotentKey{}).(bool); ok {
		return v
	}
	if r.idempotent == nil {
		return true
	}
	if c, ok := request.(*unaryCall); ok {
		request = c.req
	}
	return r.idempotent(request)
}

// attempter makes an attempt of a call on the instance n: on the go-kit
// face the instance's endpoint (endpointAttempt), on a ClientConn's the
// call pinned to n (invokeAttempt). sent says whether the attempt may have
// left this process, as the picks of its calls tell it (attemptRec); o is
// how the attempt ended, as n recorded it.
type attempter func(at *attemptRec, request any) (resp any, sent bool, o outcome, err error)

// endpointAttempt calls the endpoint of the attempt's instance; the picks
// of a Factory's connection say whether the attempt may have left this
// process.
func endpointAttempt(at *attemptRec, request any) (any, bool, outcome, error) {
	return at.n.attempt(at, request)
}

// attempts is what one call has done so far.
type attempts struct {
	// first is the instance its first attempt went to; tried are all the
	// instances its attempts went to, nil until a second attempt picks, so
	// that a call answered at once allocates nothing for them (the array
	// would escape through Balancer.Pick).
	first    *Node
	tried    []*Node
	made     int   // attempts, those that found no endpoint included
	reached  int   // attempts that went to an instance
	answered *Node // the instance whose attempt answered, once one has
	// failed are the attempts that failed, in the order they ended: nil
	// until one does, so that a call whose first attempt answers
	// allocates nothing for them (the hot path: BenchmarkOverhead).
	failed []attemptFailure
}

// triedSoFar is the instances the call's attempts went to, for a pick.
func (a *attempts) triedSoFar() []*Node {
	if a.tried == nil && a.first != nil {
		a.tried = append(make([]*Node, 0, 4), a.first)
	}
	return a.tried
}

// add records that an attempt went to n.
func (a *attempts) add(n *Node) {
	if a.first == nil {
		a.first = n
		return
	}
	a.tried = append(a.triedSoFar(), n)
}

// lastOutcome is how the last failed attempt ended.
func (a *attempts) lastOutcome() outcome {
	if len(a.failed) == 0 {
		return answered
	}
	return a.failed[len(a.failed)-1].o
}

// lastTried is the instance the last attempt went to, nil if none did.
func (a *attempts) lastTried() *Node {
	if len(a.tried) > 0 {
		return a.tried[len(a.tried)-1]
	}
	return a.first
}

// attemptFailure is one failed attempt: its instance (nil when it found
// none) and its error.
type attemptFailure struct {
	n   *Node
	err error
	o   outcome // how the attempt ended, by its instance's classification
}

func (r *retry) call(ctx context.Context, request interface{}) (interface{}, error) {
	if r.tracer != nil {
		return r.tracedCall(ctx, request)
	}
	return r.admitted(ctx, request)
}

// tracedCall is call in a span of its own.
func (r *retry) tracedCall(ctx context.Context, request interface{}) (interface{}, error) {
	ctx, span := r.tracer.Start(ctx, callSpan)
	defer span.End()
	resp, err := r.admitted(ctx, request)
	if err != nil {
		span.SetStatus(otelcodes.Error, err.Error())
	}
	return resp, err
}

// admitted makes the call's attempts if the throttle admits it.
func (r *retry) admitted(ctx context.Context, request interface{}) (interface{}, error) {
	// One reading of the clock serves the throttle, the budget, the
	// deadline and the first attempt's share: each reading costs a loopback
	// call about 60ns here, more where the call has left the caches cold
	// (BENCHMARKS.md, "Retry's own work").
	start := time.Now()
	if err := r.throttle.admit(start); err != nil {
		add(r.metrics.Throttled)
		return nil, err
	}
	resp, shed, err := r.attempts(ctx, request, start)
	r.throttle.done(start, shed)
	return resp, err
}

// attempts makes the attempts of a call, and says whether the last was
// shed (by its instance's classification, which the throttle goes by).
func (r *retry) attempts(ctx context.Context, request interface{}, start time.Time) (interface{}, bool, error) {
	deadline := start.Add(r.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	r.budget.call(start)
	idempotent := r.isIdempotent(ctx, request)
	var (
		a       attempts
		last    error
		spent   bool
		unknown bool       // the last attempt may have reached its instance
		span    trace.Span // the last attempt's, until it is ended; nil: not traced
	)
	// A failed attempt's span ends once the call knows whether it goes on.
	defer func() {
		if span != nil {
			endAttempt(span, failedOutcome(a.lastOutcome(), last, false), last)
		}
	}()
	for {
		n, err := r.b.Pick(a.triedSoFar())
		sent := false
		if err == nil {
			if a.reached > 0 {
				// A retry that will reach an instance: it must fit the budget.
				if !r.budget.retry() {
					spent = true
					add(r.metrics.BudgetExhausted)
					break
				}
				add(r.metrics.Retries)
				if slices.Contains(a.triedSoFar(), n) {
					// Round again: every instance known has failed this
					// call, most likely at once (a connection refused).
					// Spread the attempts left over the time left, so
					// that an instance back within it (one restarted on
					// its address, reconnecting) gets one.
					pause := min(roundPause, time.Until(deadline)/time.Duration(r.max-a.made+1))
					if !ctxtime.Sleep(ctx, pause) {
						break
					}
				}
			}
			a.reached++
			a.add(n)
			now := start // a first attempt's time is the call's
			if a.made > 0 {
				now = time.Now()
			}
			share := deadline.Sub(now) / time.Duration(r.max-a.made)
			var resp interface{}
			if idempotent && a.made == 0 && r.hedgeAfter > 0 && r.hedgeAfter < share && r.max > 1 && hedgeable(request) {
				resp, a, err = r.hedged(ctx, n, request, share, deadline, a)
			} else {
				a.made++
				var o outcome
				actx := ctx
				if r.tracer != nil {
					actx, span = r.startAttempt(ctx, n, a.made, false)
				}
				resp, sent, o, err = r.attemptOnce(actx, n, request, now, share)
				if err != nil {
					a.failed = append(a.failed, attemptFailure{n, err, o})
				} else {
					a.answered = n
					endAttempt(span, spanOK, nil)
					span = nil
				}
			}
			if err == nil {
				if at, ok := ctx.Value(answeredKey{}).(*string); ok {
					*at = a.answered.instance
				}
				return resp, false, nil
			}
		} else {
			a.made++
			o := answered // a Balancer's error of its own ends the call
			if errors.Is(err, lb.ErrNoEndpoints) {
				o = failed // none known yet: worth another look
			}
			a.failed = append(a.failed, attemptFailure{nil, err, o})
		}
		last = err
		if ctx.Err() != nil {
			break
		}
		f := a.failed[len(a.failed)-1]
		keep, replacement := f.o.retryable(), error(nil)
		if r.retryable != nil {
			keep, replacement = r.retryable(a.made, last)
		}
		if !keep {
			// The policy's answer, not a give-up: the error (an
			// instance's answer, say) is the call's as it is.
			return nil, f.o == shed, cmp.Or(replacement, last)
		}
		if sent && !idempotent && f.o != shed {
			unknown = true
			endAttempt(span, spanOutcomeUnknown, last)
			span = nil
			break
		}
		if a.made >= r.max || !time.Now().Before(deadline) {
			break
		}
		endAttempt(span, failedOutcome(f.o, last, true), last)
		span = nil
		if errors.Is(last, lb.ErrNoEndpoints) {
			pause := min(noEndpointsPause, time.Until(deadline)/time.Duration(r.max-a.made+1))
			if !ctxtime.Sleep(ctx, pause) {
				break
			}
		}
	}
	lastShed := len(a.failed) > 0 && a.failed[len(a.failed)-1].o == shed
	return nil, lastShed, r.giveUp(ctx, a, last, spent, unknown, start, deadline)
}

// giveUp is the error of a call that Retry gave up on after a's attempts,
// the last of which failed with last.
func (r *retry) giveUp(ctx context.Context, a attempts, last error, spent, unknown bool, start, deadline time.Time) *RetryError {
	e := &RetryError{Attempts: a.made, Timeout: r.timeout, Last: last, BudgetSpent: spent, OutcomeUnknown: unknown,
		Reached: a.reached, limit: deadline.Sub(start)}
	if n := a.lastTried(); n != nil {
		e.Instance = n.instance
	}
	e.Failures = make([]AttemptFailure, len(a.failed))
	for i, f := range a.failed {
		e.Failures[i].Err = f.err
		if f.n != nil {
			e.Failures[i].Instance = f.n.instance
		}
	}
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		e.Canceled = true
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || !time.Now().Before(deadline):
		e.TimedOut = true
	}
	if a.reached == 0 {
		e.Last = keepHint(last, a.failed)
	}
	return e
}

// keepHint gives last, the explanation of the last of a call's attempts
// that found no instance, the hint an earlier attempt's explanation got:
// sd's Instancer gives it once (to the first attempt of the first call
// that finds no instance because Consul cannot be reached), and the call's
// error is what its caller sees.
func keepHint(last error, failed []attemptFailure) error {
	nie, ok := last.(*sd.NoInstancesError)
	if !ok || nie.Hint != "" {
		return last
	}
	for _, f := range failed {
		if earlier, ok := f.err.(*sd.NoInstancesError); ok && earlier.Hint != "" {
			hinted := *nie
			hinted.Hint = earlier.Hint
			return &hinted
		}
	}
	return last
}

// forking is a request whose attempts write into what the caller gave
// (a ClientConn's unary call: its reply and call options): each of two
// attempts that run at once, a hedge and the attempt it races, needs a
// copy of its own (fork), and the caller gets what the winner's holds
// (won, which returns the response). One that cannot be copied is not
// hedged (forks).
type forking interface {
	forks() bool
	fork() any
	won(attempt any) any
}

// hedgeable says whether request may have two attempts at once.
func hedgeable(request any) bool {
	f, ok := request.(forking)
	return !ok || f.forks()
}

// hedged makes a call's first attempt, on n, and, if it has not answered
// after r.hedgeAfter, one more on another instance, budget permitting. The
// first answer wins and the other attempt is cancelled: the first attempt
// as outpaced (its instance was slower than a hedge that started later,
// which ejection counts against it), a hedge as merely abandoned. When both
// fail it returns the later failure. It records every failure in a.failed.
// It takes the call's attempts so far and returns them updated.
func (r *retry) hedged(ctx context.Context, n *Node, request interface{}, share time.Duration, deadline time.Time, a attempts) (interface{}, attempts, error) {
	type result struct {
		resp  interface{}
		err   error
		n     *Node
		hedge bool
		o     outcome
		req   interface{} // the attempt's copy of request, when it forks
	}
	results := make(chan result, 2) // never blocks a losing attempt
	f, forks := request.(forking)
	run := func(ctx context.Context, n *Node, no int, share time.Duration, hedge bool) {
		req := request
		if forks {
			req = f.fork()
		}
		var span trace.Span
		if r.tracer != nil {
			ctx, span = r.startAttempt(ctx, n, no, hedge)
		}
		resp, _, o, err := r.attemptOnce(ctx, n, req, time.Now(), share)
		if err == nil {
			endAttempt(span, spanOK, nil)
		} else {
			endAttempt(span, failedOutcome(o, err, false), err)
		}
		results <- result{resp, err, n, hedge, o, req}
	}
	firstCtx, cancelFirst := context.WithCancelCause(ctx)
	defer cancelFirst(nil)
	hedgeCtx, cancelHedge := context.WithCancelCause(ctx)
	defer cancelHedge(nil)
	a.made++
	go run(firstCtx, n, a.made, share, false)
	inflight := 1
	timer := time.NewTimer(r.hedgeAfter)
	defer timer.Stop()
	for {
		select {
		case res := <-results:
			inflight--
			if res.err == nil {
				if res.hedge {
					cancelFirst(errOutpaced)
				} else {
					cancelHedge(errHedgeUnneeded)
				}
				a.answered = res.n
				if forks {
					res.resp = f.won(res.req)
				}
				return res.resp, a, nil
			}
			a.failed = append(a.failed, attemptFailure{res.n, res.err, res.o})
			if inflight == 0 {
				return nil, a, res.err
			}
		case <-timer.C:
			// The timer fires once, while the first attempt (the call's
			// only one so far, of r.max > 1) is in flight.
			n2, err := r.b.Pick(a.triedSoFar())
			if err != nil || slices.Contains(a.triedSoFar(), n2) {
				continue // no other instance to hedge to
			}
			if !r.budget.retry() {
				add(r.metrics.BudgetExhausted)
				continue
			}
			a.add(n2)
			add(r.metrics.Hedges)
			a.made++
			a.reached++
			inflight++
			go run(hedgeCtx, n2, a.made, time.Until(deadline)/time.Duration(r.max-a.made+1), true)
		}
	}
}

// attemptOnce calls n, cancelling the call once share has passed since
// now (the clock, read by the caller), and tells the balancer how it
// ended. sent says whether the attempt may have left this process: it did
// unless the picks of its calls (a Factory's connection's, a ClientConn's)
// saw none of it sent.
func (r *retry) attemptOnce(ctx context.Context, n *Node, request interface{}, now time.Time, share time.Duration) (resp interface{}, sent bool, o outcome, err error) {
	// The share is enforced by the watchdog, which cancels the attempt,
	// not by a context deadline: a deadline travels to the server as
	// grpc-timeout and costs both sides a timer context, a measurable part
	// of a loopback call (BENCHMARKS.md, raw-3conn-deadline). The caller's
	// own deadline, if any, still travels.
	at := newRecord(ctx, n, request)
	at.begun = now
	at.start()
	slot := r.watchdog.watch(now, share, at)
	resp, sent, o, err = r.try(at, request)
	r.watchdog.release(slot)
	if at.ejectedIt.Load() {
		trace.SpanFromContext(ctx).SetAttributes(attrEjected.Bool(true))
	}
	cause := at.end()
	if err != nil && errors.Is(cause, errAttemptTimeout) && ctx.Err() == nil {
		err = &attemptTimeoutError{share: share, err: err}
	}
	r.b.Done(n, err)
	return resp, sent, o, err
}

// Causes of an attempt's cancellation, which tell the attempt's node how it
// ended (classify).
var (
	// errAttemptTimeout: the attempt used up its share of the retry timeout.
	errAttemptTimeout = errors.New("attempt's share of the retry timeout used up")
	// errOutpaced: a hedge to another instance answered first.
	errOutpaced = errors.New("a hedge to another instance answered first")
	// errHedgeUnneeded: the attempt the hedge raced answered first.
	errHedgeUnneeded = errors.New("the hedged attempt answered first")
)

// RetryError is what Retry returns when it gave up on a call it would
// have tried again: attempts or time used up, the retry budget spent, the
// caller's context done, or a call that is not idempotent whose attempt
// may have reached its instance. An error the policy does not retry (an
// instance's answer, such as NotFound) is returned as it is instead.
//
// Its message says what happened, on one line: when no attempt found an
// instance, that none was known, with discovery's explanation (Last);
// otherwise how many attempts failed on which instances and how (each
// distinct cause once), "within" the time limit only when that limit
// ended the call.
type RetryError struct {
	Attempts int
	Timeout  time.Duration // the configured limit, RetryConfig.Timeout
	Last     error         // the last attempt's error
	Instance string        // the instance of the last attempt that reached one, "" if none did
	// BudgetSpent says the retry budget refused the retry that would have
	// come next.
	BudgetSpent bool
	// OutcomeUnknown says the call is not idempotent and its last attempt
	// may have reached its instance before failing: the call may or may not
	// have taken effect there, and was not sent again.
	OutcomeUnknown bool
	// Reached is how many attempts went to an instance. 0 means none found
	// one: no instance was known, and Last (an *sd.NoInstancesError from
	// sd's Instancers) says why.
	Reached int
	// TimedOut says the call's time limit ended it: Timeout, or the
	// caller's deadline when that came first. Canceled says the caller
	// cancelled it. Neither: its attempts were used up (Attempts), or
	// BudgetSpent or OutcomeUnknown.
	TimedOut, Canceled bool
	// Failures are the failed attempts, in the order they ended, hedges
	// included: the instance each went to ("" for an attempt that found
	// none) and its error.
	Failures []AttemptFailure

	limit time.Duration // the call's time limit, Timeout or less; 0: Timeout
}

// AttemptFailure is one failed attempt of a call.
type AttemptFailure struct {
	Instance string // host:port, "" when the attempt found no instance
	Err      error
}

// Bounds of RetryError's message.
const (
	maxCauseLen    = 240 // bytes of one cause
	maxCauseGroups = 4   // distinct causes listed; more are counted
)

func (e *RetryError) Error() string {
	if e.OutcomeUnknown {
		return fmt.Sprintf("attempt %d failed after it may have reached %s, and the call is not idempotent (not sent again; its outcome is unknown): %v", e.Attempts, e.Instance, e.Last)
	}
	limit := e.Timeout
	if e.limit > 0 {
		limit = e.limit
	}
	if limit >= time.Millisecond {
		limit = limit.Round(time.Millisecond)
	}
	n := plural(e.Attempts, "attempt")
	if e.Reached == 0 && errors.Is(e.Last, lb.ErrNoEndpoints) {
		switch {
		case e.Canceled:
			return fmt.Sprintf("no instance known before the caller cancelled the call (%s): %v", n, e.Last)
		case e.TimedOut:
			return fmt.Sprintf("no instance known within %v (%s): %v", limit, n, e.Last)
		}
		return fmt.Sprintf("no instance known (%s): %v", n, e.Last)
	}
	failures := e.Failures
	if len(failures) == 0 && e.Last != nil { // a RetryError made by hand
		failures = []AttemptFailure{{Instance: e.Instance, Err: e.Last}}
	}
	var what string
	switch {
	case e.BudgetSpent:
		what = n + " failed and the retry budget is spent (no retry now)"
	case e.Canceled:
		what = "the caller cancelled the call after " + n
	case e.TimedOut:
		what = fmt.Sprintf("%s within %v failed", n, limit)
	default:
		what = n + " failed"
	}
	return what + ": " + describeFailures(failures)
}

// Unwrap returns the last attempt's error.
func (e *RetryError) Unwrap() error { return e.Last }

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// describeFailures lists failures by cause, in the order each cause first
// came, each cause once with the instances that failed so:
// "127.0.0.1:1 Unavailable (connection refused); 127.0.0.1:2, 127.0.0.1:3
// ResourceExhausted (server busy: ...)".
func describeFailures(failures []AttemptFailure) string {
	type group struct {
		cause  string
		insts  []string
		counts []int
	}
	var groups []*group
	for _, f := range failures {
		cause := causeOf(f.Instance, f.Err)
		i := slices.IndexFunc(groups, func(g *group) bool { return g.cause == cause })
		if i < 0 {
			groups = append(groups, &group{cause: cause})
			i = len(groups) - 1
		}
		g := groups[i]
		if j := slices.Index(g.insts, f.Instance); j >= 0 {
			g.counts[j]++
		} else {
			g.insts, g.counts = append(g.insts, f.Instance), append(g.counts, 1)
		}
	}
	var b strings.Builder
	for i, g := range groups {
		if i == maxCauseGroups {
			fmt.Fprintf(&b, "; and %s", plural(len(groups)-i, "other cause"))
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		for j, inst := range g.insts {
			if j > 0 {
				b.WriteString(", ")
			}
			if inst == "" {
				inst = "no instance known"
			}
			b.WriteString(inst)
			if g.counts[j] > 1 {
				fmt.Fprintf(&b, " x%d", g.counts[j])
			}
		}
		b.WriteString(" " + g.cause)
	}
	return b.String()
}

// causeOf says in short how an attempt on instance ("" for none) failed
// with err: its gRPC code and message, without what gRPC's transport wraps
// around a failed dial, such as "Unavailable (connection refused)".
func causeOf(instance string, err error) string {
	var timeout *attemptTimeoutError
	if errors.As(err, &timeout) {
		return fmt.Sprintf("DeadlineExceeded (no answer within its share of the time, %v)", timeout.share.Round(time.Millisecond))
	}
	if err == nil {
		return "(no error)"
	}
	st, ok := status.FromError(err)
	if !ok || instance == "" {
		// Not a gRPC failure, or discovery's explanation of no instance.
		return "(" + clip(err.Error()) + ")"
	}
	msg := st.Message()
	if rest, ok := strings.CutPrefix(msg, `connection error: desc = "`); ok {
		if i := strings.IndexByte(rest, '"'); i >= 0 {
			rest = rest[:i] + rest[i+1:]
		}
		msg = rest
	}
	msg = strings.TrimPrefix(msg, "transport: Error while dialing: ")
	if rest, ok := strings.CutPrefix(msg, "dial tcp "+instance+": "); ok {
		msg = strings.TrimPrefix(rest, "connect: ")
	}
	if msg == "" {
		return st.Code().String()
	}
	return st.Code().String() + " (" + clip(msg) + ")"
}

// clip cuts s to maxCauseLen bytes, on a rune boundary, marking the cut.
func clip(s string) string {
	if len(s) <= maxCauseLen {
		return s
	}
	cut := maxCauseLen
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// attemptTimeoutError marks a failure caused by an attempt's own share of
// the time running out. Its gRPC status is DeadlineExceeded, and it matches
// context.DeadlineExceeded, whatever status the cancelled call ended with.
type attemptTimeoutError struct {
	share time.Duration
	err   error
}

func (e *attemptTimeoutError) Error() string {
	return fmt.Sprintf("attempt timed out after its share of %v: %v", e.share.Round(time.Microsecond), e.err)
}

func (e *attemptTimeoutError) Unwrap() error { return e.err }

// Is makes errors.Is(err, context.DeadlineExceeded) hold.
func (e *attemptTimeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

// GRPCStatus reports DeadlineExceeded.
func (e *attemptTimeoutError) GRPCStatus() *status.Status {
	return status.New(codes.DeadlineExceeded, e.Error())
}

package client

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/balancer"
)

// attemptRec is one attempt of a call on an instance, in the context of
// its calls, for the picker that picks for them: on a ClientConn
// (NewConn), the instance Retry picked, which the picker takes; on a
// Factory's connection, the instance whose connection it is. A pick's
// Done tells it how its call ended, as grpc's balancers learn it: whether
// any of it was sent, and, on a ClientConn, the outcome the instance
// recorded.
//
// It is also the context of the attempt's calls (one allocation, not
// two): its Value answers attemptKey with itself. Once started (start),
// cancel ends it with a cause, as context.WithCancelCause's function
// would.
type attemptRec struct {
	// Context is the call's context, or, once started under a context
	// that can end, a cancellable child of it.
	context.Context
	n      *Node
	begun  time.Time   // when the attempt started: its maker's reading of the clock (Retry's)
	seen   atomic.Bool // a picker of the instance's saw the attempt
	picked atomic.Bool // and gave one of its calls a SubConn
	sent   atomic.Bool // and bytes of one of them left for the instance
	// ejectedIt says that the attempt's failure ejected its instance
	// (for its span: trimkit.ejected).
	ejectedIt atomic.Bool
	o         outcome // a ClientConn's: set by Done, before the invoker returns

	// cancelChild cancels Context, when start made it a child.
	cancelChild context.CancelCauseFunc
	// own says that the record cancels itself: the call's context never
	// ends (no Done channel), and a child context of it would cost grpc's
	// calls under the attempt three allocations more than the record's
	// own cancellation does (the child's map of children and its Done
	// channel; BENCHMARKS.md, "The call path"). The fields below are its,
	// guarded by mu.
	own        bool
	mu         sync.Mutex
	done       chan struct{} // made by the first Done
	err, cause error         // set by cancel
	after1     func()        // what AfterFunc registered
	afterMore  []func()
}

type attemptKey struct{}

// start makes the attempt cancellable (see cancel).
func (at *attemptRec) start() {
	if at.Context.Done() == nil {
		at.own = true
		return
	}
	at.Context, at.cancelChild = context.WithCancelCause(at.Context)
}

// cancel ends the attempt's calls, with cause (nil: context.Canceled),
// if it has not ended already.
func (at *attemptRec) cancel(cause error) {
	if !at.own {
		if at.cancelChild != nil {
			at.cancelChild(cause)
		}
		return
	}
	at.mu.Lock()
	if at.err != nil {
		at.mu.Unlock()
		return
	}
	at.cancelLocked(cause)
}

// cancelLocked cancels the attempt, which has not ended, with cause. It
// is called with at.mu held, and unlocks it.
func (at *attemptRec) cancelLocked(cause error) {
	at.err = context.Canceled
	at.cause = cause
	if cause == nil {
		at.cause = context.Canceled
	}
	if at.done != nil {
		close(at.done)
	}
	f, more := at.after1, at.afterMore
	at.after1, at.afterMore = nil, nil
	at.mu.Unlock()
	if f != nil {
		f()
	}
	for _, f := range more {
		f()
	}
}

// causeOfEnd is why the attempt was cancelled, nil if it was not.
func (at *attemptRec) causeOfEnd() error {
	if !at.own {
		if at.cancelChild == nil {
			return nil
		}
		return context.Cause(at.Context)
	}
	at.mu.Lock()
	defer at.mu.Unlock()
	return at.cause
}

// end ends the attempt's calls, as cancel(nil) does, and returns why it
// had been cancelled before, nil if it had not: causeOfEnd and cancel in
// one, for the end of every attempt.
func (at *attemptRec) end() (cause error) {
	if !at.own {
		cause = at.causeOfEnd()
		at.cancel(nil)
		return cause
	}
	at.mu.Lock()
	if at.err != nil {
		cause = at.cause
		at.mu.Unlock()
		return cause
	}
	at.cancelLocked(nil)
	return nil
}

func (at *attemptRec) Done() <-chan struct{} {
	if !at.own {
		return at.Context.Done()
	}
	at.mu.Lock()
	defer at.mu.Unlock()
	if at.done == nil {
		at.done = make(chan struct{})
		if at.err != nil {
			close(at.done)
		}
	}
	return at.done
}

func (at *attemptRec) Err() error {
	if !at.own {
		return at.Context.Err()
	}
	at.mu.Lock()
	defer at.mu.Unlock()
	return at.err
}

func (at *attemptRec) Value(key any) any {
	if key == (attemptKey{}) {
		return at
	}
	return at.Context.Value(key)
}

// AfterFunc arranges for f to run when the attempt is cancelled: how a
// context made from it (grpc's, for each call) ends with it, as the
// context package asks of a Context that is not its own. When the record
// cancels itself, f runs in cancel; the stop it returns does nothing,
// for what the context package registers does nothing once its context
// has ended, and is kept no longer than the attempt.
func (at *attemptRec) AfterFunc(f func()) (stop func() bool) {
	if !at.own {
		return context.AfterFunc(at.Context, f)
	}
	at.mu.Lock()
	if at.err != nil {
		at.mu.Unlock()
		go f()
		return noStop
	}
	if at.after1 == nil {
		at.after1 = f
	} else {
		at.afterMore = append(at.afterMore, f)
	}
	at.mu.Unlock()
	return noStop
}

func noStop() bool { return false }

// attemptCause is context.Cause(ctx), for a context that is, or is made from,
// a started attempt's record that cancels itself (which the context
// package cannot see into): why the attempt was cancelled.
func attemptCause(ctx context.Context) error {
	if at, ok := ctx.Value(attemptKey{}).(*attemptRec); ok && at.own {
		if c := at.causeOfEnd(); c != nil {
			return c
		}
	}
	return context.Cause(ctx)
}

// ended records how one of the attempt's calls ended.
func (at *attemptRec) ended(di balancer.DoneInfo) {
	at.picked.Store(true)
	if di.BytesSent {
		at.sent.Store(true)
	}
}

// mayHaveSent says whether the attempt may have left this process: yes
// unless a picker saw it and none of its calls sent a byte. An attempt no
// picker saw went through an endpoint that was not a Factory's: it may
// have.
func (at *attemptRec) mayHaveSent() bool { return !at.seen.Load() || at.sent.Load() }

// recorder is a request that keeps the record of its first attempt
// (unaryCall).
type recorder interface {
	record(ctx context.Context, n *Node) *attemptRec
}

// newRecord is the record of an attempt of request on n under ctx.
func newRecord(ctx context.Context, n *Node, request any) *attemptRec {
	if r, ok := request.(recorder); ok {
		return r.record(ctx, n)
	}
	return &attemptRec{Context: ctx, n: n}
}

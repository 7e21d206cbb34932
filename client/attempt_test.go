package client

import (
	"context"
	"errors"
	"testing"
	"time"
)

// An attempt's record under a context that never ends cancels itself:
// contexts made from it (as grpc makes one for each call) end with it,
// with its cause visible through them; context.AfterFunc on it runs, or
// not once stopped; Done is closed, whenever it was first asked for.
func TestAttemptRecordCancelsItsOwnContexts(t *testing.T) {
	for _, early := range []bool{true, false} {
		at := &attemptRec{Context: context.Background()}
		at.start()
		if !at.own {
			t.Fatal("a record under context.Background should cancel itself")
		}
		var done <-chan struct{}
		if early {
			done = at.Done()
		}
		child, cancelChild := context.WithCancel(at)
		defer cancelChild()
		grandchild, cancelGrandchild := context.WithTimeout(child, time.Hour)
		defer cancelGrandchild()
		ran := make(chan struct{})
		context.AfterFunc(at, func() { close(ran) })
		stop := context.AfterFunc(at, func() { t.Error("a stopped AfterFunc ran") })
		if !stop() {
			t.Error("stop found the AfterFunc already run")
		}
		if at.Err() != nil || child.Err() != nil || attemptCause(grandchild) != nil {
			t.Fatal("ended before it was cancelled")
		}
		if got := grandchild.Value(attemptKey{}); got != at {
			t.Errorf("Value(attemptKey) through two contexts = %v, want the record", got)
		}

		at.cancel(errAttemptTimeout)
		at.cancel(errOutpaced) // the first cause stays
		if !early {
			done = at.Done()
		}
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Done not closed")
		}
		<-grandchild.Done()
		<-ran
		if !errors.Is(at.Err(), context.Canceled) || !errors.Is(grandchild.Err(), context.Canceled) {
			t.Errorf("Err: %v, %v; want context.Canceled", at.Err(), grandchild.Err())
		}
		if got := attemptCause(grandchild); got != errAttemptTimeout {
			t.Errorf("attemptCause through the contexts = %v, want errAttemptTimeout", got)
		}
		if got := classify(grandchild, errors.New("canceled"), func(error) Class { return Answer }); got != timedOut {
			t.Errorf("classify = %v, want %v", got, timedOut)
		}
		// A context made once the record ended ends at once.
		late, cancelLate := context.WithCancel(at)
		<-late.Done()
		cancelLate()
	}
}

// Under a context that can end, the record is a child of it: the
// caller's cancellation reaches the attempt, and the record's cause is
// context.Cause's.
func TestAttemptRecordUnderACancellableContext(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	at := &attemptRec{Context: parent}
	at.start()
	if at.own {
		t.Fatal("a record under a cancellable context should be its child")
	}
	child, cancelChild := context.WithCancel(at)
	defer cancelChild()
	cancel()
	<-child.Done()
	if got := attemptCause(child); got != context.Canceled {
		t.Errorf("cause %v, want context.Canceled", got)
	}

	at2 := &attemptRec{Context: context.Background()}
	at2.start()
	parent2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	at3 := &attemptRec{Context: parent2}
	at3.start()
	at3.cancel(errOutpaced)
	if got := attemptCause(at3); got != errOutpaced {
		t.Errorf("cause %v, want errOutpaced", got)
	}
	at2.cancel(nil)
	if got := at2.causeOfEnd(); got != context.Canceled {
		t.Errorf("cancel(nil): cause %v, want context.Canceled", got)
	}
}

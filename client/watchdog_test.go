package client

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// The watchdog cancels each attempt once its share is over, with the
// attempt-timeout cause, whatever order the shares end in, and never one
// that was released in time.
func TestWatchdogCancelsAttemptsPastTheirShare(t *testing.T) {
	w := newWatchdog()
	type watchedCtx struct {
		ctx   context.Context
		share time.Duration
		slot  int32
	}
	var all []watchedCtx
	start := time.Now()
	// Later deadlines first, then an earlier one: it must re-arm.
	for _, share := range []time.Duration{80 * time.Millisecond, 60 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond} {
		ctx, cancel := context.WithCancelCause(context.Background())
		t.Cleanup(func() { cancel(nil) })
		all = append(all, watchedCtx{ctx, share, w.watch(time.Now(), share, cancelFunc(cancel))})
	}
	released, releasedCancel := context.WithCancelCause(context.Background())
	defer releasedCancel(nil)
	w.release(w.watch(time.Now(), 30*time.Millisecond, cancelFunc(releasedCancel)))

	for _, a := range all {
		<-a.ctx.Done()
		took := time.Since(start)
		if !errors.Is(context.Cause(a.ctx), errAttemptTimeout) {
			t.Errorf("share %v: cause %v, want errAttemptTimeout", a.share, context.Cause(a.ctx))
		}
		if took < a.share {
			t.Errorf("share %v: cancelled after %v, before it was over", a.share, took)
		}
		w.release(a.slot)
	}
	time.Sleep(20 * time.Millisecond)
	if released.Err() != nil {
		t.Errorf("an attempt released before its share ended was cancelled")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.free) != len(w.slots) {
		t.Errorf("%d slots, %d free after every attempt ended", len(w.slots), len(w.free))
	}
}

// Slots are reused, and attempts from many goroutines at once each end
// by their own share or their release.
func TestWatchdogConcurrentAttempts(t *testing.T) {
	w := newWatchdog()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				ctx, cancel := context.WithCancelCause(context.Background())
				hang := (g+i)%50 == 0
				share := time.Millisecond
				if !hang {
					share = time.Hour
				}
				slot := w.watch(time.Now(), share, cancelFunc(cancel))
				if hang {
					<-ctx.Done()
					if !errors.Is(context.Cause(ctx), errAttemptTimeout) {
						t.Errorf("cause %v", context.Cause(ctx))
					}
				} else if ctx.Err() != nil {
					t.Errorf("an attempt with an hour's share was cancelled")
				}
				w.release(slot)
				cancel(nil)
			}
		}()
	}
	wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.slots) > 8 || len(w.free) != len(w.slots) {
		t.Errorf("%d slots (%d free) for 8 attempts at a time", len(w.slots), len(w.free))
	}
}

// cancelFunc is a context's cancel function as the watchdog ends it.
type cancelFunc context.CancelCauseFunc

func (f cancelFunc) cancel(cause error) { f(cause) }

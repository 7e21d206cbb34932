package client

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestThrottleProbabilityIsTheSREBooks(t *testing.T) {
	c := newClock()
	th := newThrottle(Throttle{K: 2, Window: time.Second}, c.now)
	p := func() float64 {
		th.mu.Lock()
		defer th.mu.Unlock()
		p, _, _ := th.probability()
		return p
	}
	if p() != 0 {
		t.Fatalf("no calls yet: p = %v, want 0", p())
	}
	for range 100 {
		if err := th.admit(c.now()); err != nil {
			t.Fatalf("a fresh throttle refused a call: %v", err)
		}
	}
	// Calls in flight count neither way.
	if p() != 0 {
		t.Errorf("100 calls in flight, none ended: p = %v, want 0", p())
	}
	for range 20 {
		th.done(c.now(), false)
	}
	for range 30 {
		th.done(c.now(), true)
	}
	// 50 requests, 20 accepts: 50 - 2*20 = 10 over 51.
	if want := 10.0 / 51; math.Abs(p()-want) > 1e-12 {
		t.Errorf("50 requests, 20 accepted: p = %v, want %v", p(), want)
	}
	for range 70 {
		th.done(c.now(), true)
	}
	// 120 requests, 20 accepts: (120 - 40) / 121.
	if want := 80.0 / 121; math.Abs(p()-want) > 1e-12 {
		t.Errorf("120 requests, 20 accepted: p = %v, want %v", p(), want)
	}
	// Half a window later the counts still stand; a window later, gone.
	c.advance(500 * time.Millisecond)
	if want := 80.0 / 121; math.Abs(p()-want) > 1e-12 {
		t.Errorf("half a window on: p = %v, want %v", p(), want)
	}
	c.advance(600 * time.Millisecond)
	if p() != 0 {
		t.Errorf("a window on: p = %v, want 0", p())
	}
}

func TestThrottleRefusesAboutP(t *testing.T) {
	c := newClock()
	th := newThrottle(Throttle{K: 2, Window: time.Second}, c.now)
	for range 1000 {
		th.done(c.now(), true)
	}
	// p = 1000/1001, and each refusal only raises it: nearly all refused,
	// and each refusal says why.
	refused := 0
	for range 1000 {
		err := th.admit(c.now())
		var te *ThrottledError
		if errors.As(err, &te) {
			refused++
			if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "client throttled itself") || te.Accepts != 0 {
				t.Fatalf("a refusal: %v (%+v)", err, te)
			}
		}
	}
	if refused < 990 {
		t.Errorf("refused %d of 1000 with p ≈ 0.999, want nearly all", refused)
	}
	// K = 3 lets more through than K = 2 for the same history.
	th3 := newThrottle(Throttle{K: 3, Window: time.Second}, c.now)
	for range 60 {
		th3.done(c.now(), false)
	}
	for range 140 {
		th3.done(c.now(), true)
	}
	th3.mu.Lock()
	p3, _, _ := th3.probability()
	th3.mu.Unlock()
	if want := (200.0 - 180) / 201; math.Abs(p3-want) > 1e-12 {
		t.Errorf("K=3, 200 requests, 60 accepted: p = %v, want %v", p3, want)
	}
}

// TestThrottleAdmitsWithoutCountingWhileAllIsAccepted pins admit's fast
// path to what the counts say: it admits without the counts only while
// the window holds no request that was not accepted, shed answers and
// refusals alike, which is when the probability is 0 for any K.
func TestThrottleAdmitsWithoutCountingWhileAllIsAccepted(t *testing.T) {
	c := newClock()
	th := newThrottle(Throttle{K: 2, Window: time.Second}, c.now)
	refusedOf := func(n int) (refused int) {
		for range n {
			if th.admit(c.now()) != nil {
				refused++
			}
		}
		return refused
	}
	for range 1000 {
		th.done(c.now(), false)
	}
	if r := refusedOf(1000); r != 0 || th.w.epoch(c.now()) < th.quietFrom.Load() {
		t.Fatalf("every call accepted: %d of 1000 refused, fast path from epoch %d at %d", r, th.quietFrom.Load(), th.w.epoch(c.now()))
	}
	// Sheds only a window later: the 1000 accepts have left it.
	c.advance(1100 * time.Millisecond)
	for range 100 {
		th.done(c.now(), true)
	}
	if r := refusedOf(1000); r < 900 {
		t.Fatalf("100 sheds, nothing accepted: %d of 1000 refused, want nearly all", r)
	}
	// 950ms on, the sheds are still in the window, and the refusals made
	// since then are in the slot of the last 50ms.
	c.advance(950 * time.Millisecond)
	if r := refusedOf(100); r < 80 {
		t.Fatalf("sheds still in the window: %d of 100 refused", r)
	}
	// 100ms on the sheds have left, the refusals have not: requests that
	// were never accepted keep the throttle off its fast path.
	c.advance(100 * time.Millisecond)
	if r := refusedOf(100); r == 0 {
		t.Fatal("refusals in the window, none accepted since: nothing refused")
	}
	// A window after the last refusal, all of it has left.
	c.advance(time.Second)
	if r := refusedOf(1000); r != 0 || th.w.epoch(c.now()) < th.quietFrom.Load() {
		t.Errorf("the window empty again: %d of 1000 refused, fast path from epoch %d at %d", r, th.quietFrom.Load(), th.w.epoch(c.now()))
	}
}

// TestThrottleCountsACallByItsStart: a call is counted in the slot of the
// clock reading it started with, or, when that slot has been reused since
// (the call lasted longer than the window), in the current one.
func TestThrottleCountsACallByItsStart(t *testing.T) {
	c := newClock()
	th := newThrottle(Throttle{K: 2, Window: time.Second}, c.now)
	start := c.now()
	c.advance(300 * time.Millisecond)
	th.done(start, true)
	th.mu.Lock()
	if s := th.w.at(start); s == nil || s.a != 1 || s.b != 0 {
		t.Errorf("a shed call that started 300ms ago: its start's slot %+v, want one request", s)
	}
	th.mu.Unlock()
	// A window on, the slot of start counts a later epoch: a call that
	// started back then is counted in it as a call of now.
	c.advance(750 * time.Millisecond)
	th.done(c.now(), false)
	th.done(start, false)
	th.mu.Lock()
	defer th.mu.Unlock()
	if s := th.w.at(start); s != nil {
		t.Errorf("a reading whose slot was reused: slot %+v, want none", s)
	}
	if requests, accepts := th.w.sums(); requests != 2 || accepts != 2 {
		t.Errorf("window: %d requests, %d accepts, want the 2 calls that ended in it", requests, accepts)
	}
}

func TestThrottleValidate(t *testing.T) {
	for _, bad := range []Throttle{{K: 0.5}, {K: -1}, {Window: time.Millisecond}, {Window: time.Hour}} {
		if err := (RetryConfig{Throttle: bad}).validate(); err == nil || !strings.Contains(err.Error(), "Retry.Throttle") {
			t.Errorf("Throttle %+v: %v, want an error naming Retry.Throttle", bad, err)
		}
	}
	if newThrottle(Throttle{Disabled: true}, time.Now).admit(time.Now()) != nil {
		t.Error("a disabled throttle refused a call")
	}
}

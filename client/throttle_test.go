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
		if err := th.admit(); err != nil {
			t.Fatalf("a fresh throttle refused a call: %v", err)
		}
	}
	// Calls in flight count neither way.
	if p() != 0 {
		t.Errorf("100 calls in flight, none ended: p = %v, want 0", p())
	}
	for range 20 {
		th.done(false)
	}
	for range 30 {
		th.done(true)
	}
	// 50 requests, 20 accepts: 50 - 2*20 = 10 over 51.
	if want := 10.0 / 51; math.Abs(p()-want) > 1e-12 {
		t.Errorf("50 requests, 20 accepted: p = %v, want %v", p(), want)
	}
	for range 70 {
		th.done(true)
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
		th.done(true)
	}
	// p = 1000/1001, and each refusal only raises it: nearly all refused,
	// and each refusal says why.
	refused := 0
	for range 1000 {
		err := th.admit()
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
		th3.done(false)
	}
	for range 140 {
		th3.done(true)
	}
	th3.mu.Lock()
	p3, _, _ := th3.probability()
	th3.mu.Unlock()
	if want := (200.0 - 180) / 201; math.Abs(p3-want) > 1e-12 {
		t.Errorf("K=3, 200 requests, 60 accepted: p = %v, want %v", p3, want)
	}
}

func TestThrottleValidate(t *testing.T) {
	for _, bad := range []Throttle{{K: 0.5}, {K: -1}, {Window: time.Millisecond}, {Window: time.Hour}} {
		if err := (RetryConfig{Throttle: bad}).validate(); err == nil || !strings.Contains(err.Error(), "Retry.Throttle") {
			t.Errorf("Throttle %+v: %v, want an error naming Retry.Throttle", bad, err)
		}
	}
	if newThrottle(Throttle{Disabled: true}, time.Now).admit() != nil {
		t.Error("a disabled throttle refused a call")
	}
}

package client

import (
	"testing"
	"time"
)

// clock is a fake time source a test moves by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock                   { return &clock{t: time.Unix(1_000_000, 0)} }
func retries(b *budget, upTo int) (n int) {
	for n < upTo && b.retry() {
		n++
	}
	return n
}

func TestBudgetFloorAndPercent(t *testing.T) {
	c := newClock()
	b := newBudget(RetryBudget{Ratio: 0.2, MinPerSecond: 10, TTL: 10 * time.Second}, c.now)
	// No calls yet: the floor, 10 a second over 10s.
	if want, have := 100, retries(b, 1000); want != have {
		t.Errorf("floor: want %d retries, have %d", want, have)
	}
	// 1000 calls allow 20% more.
	for range 1000 {
		b.call(c.now())
	}
	if want, have := 200, retries(b, 1000); want != have {
		t.Errorf("after 1000 calls: want %d more retries, have %d", want, have)
	}
}

func TestBudgetWindowSlides(t *testing.T) {
	c := newClock()
	b := newBudget(RetryBudget{Ratio: 0.5, MinPerSecond: 1, TTL: 10 * time.Second}, c.now)
	for range 100 {
		b.call(c.now())
	}
	if want, have := 60, retries(b, 1000); want != have { // 50 + 10
		t.Fatalf("want %d retries, have %d", want, have)
	}
	// Half the window later, nothing has left it.
	c.advance(5 * time.Second)
	if have := retries(b, 1000); have != 0 {
		t.Errorf("mid-window: %d more retries, want 0", have)
	}
	// Once the calls and retries are older than the TTL, only the floor is
	// left, and it is all available again.
	c.advance(6 * time.Second)
	if want, have := 10, retries(b, 1000); want != have {
		t.Errorf("after the window: want %d retries, have %d", want, have)
	}
}

func TestBudgetDisabledAllowsAll(t *testing.T) {
	var b *budget = newBudget(RetryBudget{Disabled: true}, time.Now)
	b.call(time.Now())
	if want, have := 1000, retries(b, 1000); want != have {
		t.Errorf("want %d, have %d", want, have)
	}
}

func TestRetryBudgetValidate(t *testing.T) {
	for _, bad := range []RetryBudget{{Ratio: -1}, {MinPerSecond: -1}, {TTL: time.Millisecond}, {TTL: time.Hour}} {
		if bad.validate() == nil {
			t.Errorf("%+v: want an error", bad)
		}
	}
	if err := (RetryBudget{}).validate(); err != nil {
		t.Errorf("zero value: %v", err)
	}
}

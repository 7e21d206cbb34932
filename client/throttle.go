package client

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Throttle is client-side adaptive throttling (Google's SRE book, chapter
// 21): when the instances refuse this client's calls for overload, the
// client refuses some of its calls itself, before sending them, with the
// probability
//
//	max(0, (requests − K × accepts) / (requests + 1))
//
// over the last Window, where requests are the calls made (those the
// client refused included) and accepts those that did not end refused for
// overload. A call refused by one instance and answered by another after a
// retry was accepted: throttling starts only when the whole fleet sheds,
// and then lets through about K times what the fleet accepts, so that the
// fleet stays busy and the client learns at once when it has room again,
// without flooding it with calls it will refuse. A throttled call fails at
// once with a *ThrottledError (ResourceExhausted). The zero value of each
// field means its default: K 2, Window 1s.
type Throttle struct {
	// Disabled turns throttling off: every call is sent.
	Disabled bool
	// K is how many calls per call accepted the client sends: 2 lets
	// through twice what the fleet accepts (the SRE book's choice); a
	// higher K throttles later and less.
	K float64
	// Window is how far back requests and accepts count.
	Window time.Duration
}

// defaultThrottle is K 2, the SRE book's, over 1s. The book counts over
// two minutes, which keeps a client throttling for up to two minutes
// after an overload has ended; over 1s, it stops within a second of the
// fleet accepting calls again, and a second at hundreds of calls a second
// still counts enough calls to be steady.
var defaultThrottle = Throttle{K: 2, Window: time.Second}

func (t Throttle) validate() error {
	var errs []error
	if t.K < 0 || math.IsNaN(t.K) || (t.K > 0 && t.K < 1) {
		errs = append(errs, fmt.Errorf("Throttle.K %v: must be at least 1 (0 means the default, 2)", t.K))
	}
	if t.Window < 0 || (t.Window > 0 && t.Window < 100*time.Millisecond) || t.Window > 10*time.Minute {
		errs = append(errs, fmt.Errorf("Throttle.Window %v: must be within [100ms, 10m] (0 means the default, 1s)", t.Window))
	}
	return errors.Join(errs...)
}

func (t Throttle) withDefaults() Throttle {
	if t.K == 0 {
		t.K = defaultThrottle.K
	}
	if t.Window == 0 {
		t.Window = defaultThrottle.Window
	}
	return t
}

// ThrottledError is the failure of a call the client refused itself
// (Throttle): it was not sent.
type ThrottledError struct {
	// Requests and Accepts are the calls made and those the instances
	// did not refuse for overload, over Window.
	Requests, Accepts int64
	Window            time.Duration
}

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("client throttled itself, call not sent: the instances refused %d of the last %d calls (in %v) for overload",
		e.Requests-e.Accepts, e.Requests, e.Window)
}

// GRPCStatus makes the error ResourceExhausted, as the refusals that
// caused it.
func (e *ThrottledError) GRPCStatus() *status.Status {
	return status.New(codes.ResourceExhausted, e.Error())
}

// throttle is a Throttle at work. A nil throttle sends every call.
type throttle struct {
	k      float64
	window time.Duration
	mu     sync.Mutex
	w      window // a: requests, b: accepts
	// quietFrom is the first epoch of w whose window holds no request
	// that was not accepted (a shed answer, or a call the throttle
	// refused): from it on, accepts equal requests and the probability is
	// 0 whatever K, so admit admits without the lock or the sums.
	quietFrom atomic.Int64
}

func newThrottle(cfg Throttle, now func() time.Time) *throttle {
	if cfg.Disabled {
		return nil
	}
	return &throttle{k: cfg.K, window: cfg.Window, w: newWindow(cfg.Window, now)}
}

// admit returns nil to send a call, or the error of a call the client
// refuses itself, which it counts as a request. A call sent is counted
// when it ends (done): calls in flight are neither refused nor accepted
// yet, and counting them as requests would throttle a client that starts
// many calls at once.
func (t *throttle) admit(now time.Time) error {
	if t == nil || t.w.epoch(now) >= t.quietFrom.Load() {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	p, requests, accepts := t.probability()
	if p <= 0 || rand.Float64() >= p {
		return nil
	}
	t.unaccepted(t.w.current())
	return &ThrottledError{Requests: requests + 1, Accepts: accepts, Window: t.window}
}

// unaccepted counts in s a request that was not accepted, and keeps admit
// off its fast path until s has left the window. t.mu is held.
func (t *throttle) unaccepted(s *windowSlot) {
	s.a++
	if q := s.epoch + windowSlots; q > t.quietFrom.Load() {
		t.quietFrom.Store(q)
	}
}

// probability is the chance a call is refused now, and the counts it
// comes from. t.mu is held.
func (t *throttle) probability() (p float64, requests, accepts int64) {
	requests, accepts = t.w.sums()
	return max(0, (float64(requests)-t.k*float64(accepts))/float64(requests+1)), requests, accepts
}

// done counts a sent call that started at start and ended: a request,
// and an accept unless its last attempt was shed (refused for overload,
// by the classification).
func (t *throttle) done(start time.Time, shed bool) {
	if t == nil {
		return
	}
	t.mu.Lock()
	s := t.w.atOrNow(start)
	if shed {
		t.unaccepted(s)
	} else {
		s.a++
		s.b++
	}
	t.mu.Unlock()
}

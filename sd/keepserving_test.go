package sd_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/kit/metrics"
	"github.com/go-kit/log"

	"github.com/trimkit/trimkit/internal/consulname"
	"github.com/trimkit/trimkit/internal/logbuf"
	"github.com/trimkit/trimkit/sd"
)

// gauge is a metrics.Gauge and metrics.Counter that keeps its value.
type gauge struct {
	mu sync.Mutex
	v  float64
}

var (
	_ metrics.Gauge   = (*gauge)(nil)
	_ metrics.Counter = counter{}
)

func (g *gauge) With(...string) metrics.Gauge { return g }
func (g *gauge) Set(v float64)                { g.mu.Lock(); g.v = v; g.mu.Unlock() }
func (g *gauge) Add(d float64)                { g.mu.Lock(); g.v += d; g.mu.Unlock() }
func (g *gauge) Value() float64               { g.mu.Lock(); defer g.mu.Unlock(); return g.v }

// counter is g as a metrics.Counter.
type counter struct{ *gauge }

func (c counter) With(...string) metrics.Counter { return c }

func newMetrics() (counter, *gauge) { return counter{&gauge{}}, &gauge{} }

// consulFailures are errors that a serving instance's Consul loops meet,
// permanent at start-up or not: none of them may end the loop.
func consulFailures() []error {
	return []error{
		fmt.Errorf("look up: %w", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}),
		&url.Error{Op: "Get", URL: "https://127.0.0.1:8501", Err: tls.AlertError(42)}, // bad certificate
		&sd.PermissionError{Answer: "ACL not found"},
		errors.New("dial tcp 127.0.0.1:8501: connect: connection refused"),
	}
}

// A serving instance never ends itself over Consul: KeepRegistered goes on
// through TLS errors, 403s and an unreachable agent, says so once at error
// level, counts every failure, and says when it is over.
func TestKeepRegisteredNeverEndsOverConsul(t *testing.T) {
	f := newFakeConsul()
	failures, failing := newMetrics()
	var logs logbuf.Buffer
	r, err := sd.NewRegistrar(f, validRegistration(), log.NewLogfmtLogger(&logs), sd.WithFailureMetrics(failures, failing))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := r.Register(ctx); err != nil {
		t.Fatal(err)
	}
	errs := consulFailures()
	for _, err := range errs[:3] {
		if !sd.Permanent(err) {
			t.Fatalf("%v: want it permanent (what Register gives up on)", err)
		}
	}
	f.mu.Lock()
	f.serviceErrs = errs
	f.mu.Unlock()

	done := make(chan error, 1)
	go func() { done <- r.KeepRegistered(ctx, 20*time.Millisecond) }()
	waitFor(t, 5*time.Second, "a lookup after the failures", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.lookups > len(errs)
	})
	waitFor(t, time.Second, "the recovery said", func() bool { return len(logs.Lines("can keep the registration again")) == 1 })
	select {
	case err := <-done:
		t.Fatalf("KeepRegistered returned during the failures: %v", err)
	default:
	}
	if want, have := float64(len(errs)), failures.Value(); want != have {
		t.Errorf("failures counted: want %v, have %v", want, have)
	}
	if want, have := 0.0, failing.Value(); want != have {
		t.Errorf("failing after the recovery: want %v, have %v", want, have)
	}
	if want, have := 1, len(logs.Lines("level=error", "cannot keep the registration")); want != have {
		t.Errorf("error lines: want %d (when the failures start), have %d:\n%s", want, have, logs.String())
	}
	if want, have := 1, len(logs.Lines("level=error", "hint=")); want != have {
		t.Errorf("lines with a hint: want %d (the first failure is a TLS one), have %d:\n%s", want, have, logs.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("KeepRegistered: %v", err)
	}
}

// The same holds for load reports.
func TestLoadReporterNeverEndsOverConsul(t *testing.T) {
	f := newFakeKV()
	f.acquireErr = &sd.PermissionError{Permission: `'key:write' on "trimkit/load/trimsvc/a"`}
	failures, failing := newMetrics()
	var logs logbuf.Buffer
	r, err := sd.NewLoadReporter(f, "trimsvc", "a", "127.0.0.1:1", "", 10*time.Millisecond,
		func() (int64, time.Duration, int64) { return 0, 0, 0 }, log.NewLogfmtLogger(&logs), sd.WithFailureMetrics(failures, failing))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	waitFor(t, 5*time.Second, "three failed reports", func() bool { return failures.Value() >= 3 })
	if want, have := 1.0, failing.Value(); want != have {
		t.Errorf("failing: want %v, have %v", want, have)
	}
	if lines := logs.Lines("level=error", "cannot publish the load report", "key:write"); len(lines) != 1 {
		t.Errorf("want one error line naming the permission, have:\n%s", logs.String())
	}
	f.mu.Lock()
	f.acquireErr = nil // a valid token again
	f.mu.Unlock()
	nextWrite(t, f)
	waitFor(t, time.Second, "failing back to 0", func() bool { return failing.Value() == 0 })
	select {
	case err := <-done:
		t.Fatalf("Run returned: %v", err)
	default:
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.sessions) != 0 || f.kv[consulname.LoadKey("trimsvc", "a")] != nil {
		t.Errorf("report or sessions left after Run ended: %v", f.sessions)
	}
}

package client_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/consulname"
	"github.com/trimkit/trimkit/internal/overload"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
)

// refused fails as gRPC does when nothing listens at addr.
func refused(addr string) endpoint.Endpoint {
	return func(context.Context, interface{}) (interface{}, error) {
		return nil, trim.FromStatus(status.Error(codes.Unavailable,
			`connection error: desc = "transport: Error while dialing: dial tcp `+addr+`: connect: connection refused"`))
	}
}

func failingWith(code codes.Code, msg string) endpoint.Endpoint {
	return func(context.Context, interface{}) (interface{}, error) {
		return nil, trim.FromStatus(status.Error(code, msg))
	}
}

func retryError(t *testing.T, err error) *client.RetryError {
	t.Helper()
	var re *client.RetryError
	if !errors.As(err, &re) {
		t.Fatalf("want a *client.RetryError, have %T %v", err, err)
	}
	return re
}

// A call whose attempts went to instances says how many failed, on which
// instances and how, each cause once; "within" the time limit only when
// that ended it.
func TestRetryErrorSaysHowAttemptsFailed(t *testing.T) {
	const a, b, c = "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"
	f := newFakes(map[string]endpoint.Endpoint{
		a: refused(a),
		b: func(context.Context, interface{}) (interface{}, error) {
			return nil, overload.NewMarker().Shed("server busy: 10 calls in flight, its limit (fixed 10); try another instance")
		},
		c: refused(c),
	})
	e := fakeStack(t, f, []string{a, b, c}, client.RetryConfig{MaxAttempts: 3, Timeout: time.Second})
	_, err := e(context.Background(), trimsvc.TrimRequest{S: "x"})
	// In the order of the attempts (round robin starts anywhere).
	var refusedOn []string
	for _, inst := range f.attempts() {
		if inst != b {
			refusedOn = append(refusedOn, inst)
		}
	}
	unavailable := strings.Join(refusedOn, ", ") + " Unavailable (connection refused)"
	busy := "127.0.0.1:2 ResourceExhausted (server busy: 10 calls in flight, its limit (fixed 10); try another instance)"
	groups := []string{unavailable, busy}
	if f.attempts()[0] == b {
		groups = []string{busy, unavailable}
	}
	if want, have := "3 attempts failed: "+strings.Join(groups, "; "), err.Error(); have != want {
		t.Errorf("\nwant %s\nhave %s", want, have)
	}
	re := retryError(t, err)
	if re.Attempts != 3 || re.Reached != 3 || re.TimedOut || re.Canceled || re.BudgetSpent || len(re.Failures) != 3 {
		t.Errorf("RetryError %+v", re)
	}
	for i, inst := range f.attempts() {
		if re.Failures[i].Instance != inst || re.Failures[i].Err == nil {
			t.Errorf("failure %d: want one on %s, have %+v", i, inst, re.Failures[i])
		}
	}
	if re.Instance != re.Failures[2].Instance || !errors.Is(err, re.Failures[2].Err) || status.Code(err) != codes.Unavailable && status.Code(err) != codes.ResourceExhausted {
		t.Errorf("the last attempt's instance and error: %+v", re)
	}
}

func TestRetryErrorWithinOnlyWhenTheTimeLimitEndedIt(t *testing.T) {
	waited := make(chan time.Duration, 10)
	f := newFakes(map[string]endpoint.Endpoint{"127.0.0.1:1": hanging(waited)})
	e := fakeStack(t, f, []string{"127.0.0.1:1"}, client.RetryConfig{MaxAttempts: 3, Timeout: 150 * time.Millisecond})
	_, err := e(context.Background(), trimsvc.TrimRequest{S: "x"})
	if want := "3 attempts within 150ms failed: 127.0.0.1:1 "; !strings.HasPrefix(err.Error(), want) ||
		!strings.Contains(err.Error(), "DeadlineExceeded (no answer within its share of the time, ") {
		t.Errorf("want %q..., have %v", want, err)
	}
	if re := retryError(t, err); !re.TimedOut || re.Canceled {
		t.Errorf("want TimedOut: %+v", re)
	}

	// The caller's deadline, shorter than the retry timeout, is the limit.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Millisecond)
	defer cancel()
	_, err = e(ctx, trimsvc.TrimRequest{S: "x"})
	// 60ms from the context's making, a little less from the call's start.
	if re := retryError(t, err); !re.TimedOut || !regexp.MustCompile(` within (59|60)ms failed: `).MatchString(err.Error()) {
		t.Errorf("the caller's deadline: want it named as the limit, have %v", err)
	}

	// Attempts used up well before the time limit: no "within".
	f.set("127.0.0.1:1", failing(codes.Unavailable))
	_, err = e(context.Background(), trimsvc.TrimRequest{S: "x"})
	if want := "3 attempts failed: 127.0.0.1:1 x3 Unavailable (Unavailable)"; err.Error() != want {
		t.Errorf("\nwant %s\nhave %v", want, err)
	}
	if re := retryError(t, err); re.TimedOut {
		t.Errorf("attempts used up, not timed out: %+v", re)
	}
}

func TestRetryErrorWhenTheCallerCancels(t *testing.T) {
	f := newFakes(map[string]endpoint.Endpoint{"a": failing(codes.Unavailable)})
	e := fakeStack(t, f, []string{"a"}, client.RetryConfig{MaxAttempts: 3, Timeout: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := e(ctx, trimsvc.TrimRequest{S: "x"})
	re := retryError(t, err)
	if !re.Canceled || re.TimedOut || !strings.HasPrefix(err.Error(), "the caller cancelled the call after 1 attempt: a ") {
		t.Errorf("want a cancelled call, have %+v: %v", re, err)
	}
}

// Many distinct causes: the message stays one line of bounded length.
func TestRetryErrorMessageIsBounded(t *testing.T) {
	byName := map[string]endpoint.Endpoint{}
	var names []string
	for i := range 10 {
		name := fmt.Sprintf("10.0.0.%d:80", i)
		names = append(names, name)
		byName[name] = failingWith(codes.Unavailable, fmt.Sprintf("cause %d: %s\nsecond line", i, strings.Repeat("x", 1000)))
	}
	e := fakeStack(t, newFakes(byName), names, client.RetryConfig{MaxAttempts: 10, Timeout: 5 * time.Second})
	_, err := e(context.Background(), trimsvc.TrimRequest{S: "x"})
	msg := err.Error()
	if len(msg) > 1500 || !strings.HasPrefix(msg, "10 attempts failed: ") || !strings.HasSuffix(msg, "; and 6 other causes") {
		t.Errorf("message of %d bytes: %.300s ... %s", len(msg), msg, msg[max(len(msg)-100, 0):])
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("message on more than one line: %q", msg)
	}
	if re := retryError(t, err); len(re.Failures) != 10 {
		t.Errorf("want every attempt's failure, have %d", len(re.Failures))
	}
}

// A RetryError made by hand, without the fields Retry adds now, still
// says what failed.
func TestRetryErrorMadeByHand(t *testing.T) {
	err := &client.RetryError{Attempts: 2, Timeout: 500 * time.Millisecond, Instance: "10.0.0.1:80",
		Last: status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 10.0.0.1:80: connect: connection refused"`)}
	if want, have := "2 attempts failed: 10.0.0.1:80 Unavailable (connection refused)", err.Error(); want != have {
		t.Errorf("\nwant %s\nhave %s", want, have)
	}
	err = &client.RetryError{Attempts: 3, Timeout: 500 * time.Millisecond, Last: lb.ErrNoEndpoints}
	if want, have := "no instance known (3 attempts): no endpoints available", err.Error(); want != have {
		t.Errorf("\nwant %s\nhave %s", want, have)
	}
}

// explainingInstancer has no instance, and explains it as sd's Instancer
// does: the hint with its first explanation only.
type explainingInstancer struct {
	err    error
	mu     sync.Mutex
	hinted bool
}

func (i *explainingInstancer) Register(ch chan<- kitsd.Event) { ch <- kitsd.Event{Err: i.err} }
func (i *explainingInstancer) Deregister(chan<- kitsd.Event)  {}
func (i *explainingInstancer) Stop()                          {}

func (i *explainingInstancer) NoInstances() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	e := &sd.NoInstancesError{Service: "trimsvc", Where: "consul at http://127.0.0.1:9", Discovery: i.err, Err: lb.ErrNoEndpoints}
	if !i.hinted {
		i.hinted, e.Hint = true, consulname.UnreachableHint
	}
	return e
}

// No attempt found an instance: the error says no instance was known,
// with discovery's explanation, the hint its first attempt got included,
// and lists no attempts.
func TestRetryErrorNoInstanceKnown(t *testing.T) {
	unreachable := &sd.UnreachableError{Addr: "http://127.0.0.1:9", Err: errors.New("dial tcp 127.0.0.1:9: connect: connection refused")}
	e := newEndpointer(t, &explainingInstancer{err: unreachable}, newFakes(nil).factory, log.NewNopLogger(), noEjection)
	call, err := client.Retry(client.NewRoundRobin(e), client.RetryConfig{MaxAttempts: 3, Timeout: time.Second, Budget: noBudget})
	if err != nil {
		t.Fatal(err)
	}
	want := "no instance known (3 attempts): Consul could not be reached at http://127.0.0.1:9: dial tcp 127.0.0.1:9: connect: connection refused; " +
		`so no instance of service "trimsvc" is known: no endpoints available`
	_, err = call(context.Background(), trimsvc.TrimRequest{S: "x"})
	if have := err.Error(); have != want+"; "+consulname.UnreachableHint {
		t.Errorf("first call:\nwant %s; %s\nhave %s", want, consulname.UnreachableHint, have)
	}
	re := retryError(t, err)
	if re.Reached != 0 || re.Attempts != 3 || len(re.Failures) != 3 || re.Failures[0].Instance != "" || re.TimedOut {
		t.Errorf("RetryError %+v", re)
	}
	if !errors.Is(err, lb.ErrNoEndpoints) || status.Code(err) != codes.Unavailable || !errors.Is(errors.Unwrap(err), lb.ErrNoEndpoints) {
		t.Errorf("want errors.Is ErrNoEndpoints and Unavailable: %v", err)
	}
	_, err = call(context.Background(), trimsvc.TrimRequest{S: "x"})
	if have := err.Error(); have != want {
		t.Errorf("second call, without the hint:\nwant %s\nhave %s", want, have)
	}
}

// logLines keeps what is logged, one map a line.
type logLines struct {
	mu    sync.Mutex
	lines []map[string]string
}

func (l *logLines) Log(keyvals ...any) error {
	m := map[string]string{}
	for i := 0; i+1 < len(keyvals); i += 2 {
		m[fmt.Sprint(keyvals[i])] = fmt.Sprint(keyvals[i+1])
	}
	l.mu.Lock()
	l.lines = append(l.lines, m)
	l.mu.Unlock()
	return nil
}

// with returns the lines whose msg begins with prefix.
func (l *logLines) with(prefix string) []map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]string
	for _, m := range l.lines {
		if strings.HasPrefix(m["msg"], prefix) {
			out = append(out, m)
		}
	}
	return out
}

// The Endpointer says plainly when discovery failed and no instance is
// known, with the hint the first time; with instances known, that it
// keeps them.
func TestEndpointerSaysWhenNoInstanceIsKnown(t *testing.T) {
	addr := "http://" + testenv.ClosedAddr(t)
	unreachable := &sd.UnreachableError{Addr: addr, Err: errors.New("dial tcp: connect: connection refused")}
	var logs logLines
	failing := &manualInstancer{}
	newEndpointer(t, failing, newFakes(nil).factory, &logs)
	failing.send(kitsd.Event{Err: unreachable})
	failing.send(kitsd.Event{Err: unreachable})
	var lines []map[string]string
	for _, m := range logs.with("discovery failed") {
		if m["err"] == unreachable.Error() {
			lines = append(lines, m)
		}
	}
	if len(lines) != 2 {
		t.Fatalf("want a line for each failure, have %v", lines)
	}
	for i, m := range lines {
		if m["msg"] != "discovery failed and no instance is known: calls fail until it succeeds" || m["err"] != unreachable.Error() || m["level"] != "warn" {
			t.Errorf("line %d: %v", i, m)
		}
	}
	if lines[0]["hint"] != consulname.UnreachableHint {
		t.Errorf("first line: want the hint, have %v", lines[0])
	}
	if _, ok := lines[1]["hint"]; ok {
		t.Errorf("second line: want no hint, have %v", lines[1])
	}

	inst := &manualInstancer{}
	f := newFakes(map[string]endpoint.Endpoint{"a": ok("a")})
	var logs2 logLines
	newEndpointer(t, inst, f.factory, &logs2)
	inst.send(kitsd.Event{Instances: []string{"a"}})
	inst.send(kitsd.Event{Err: unreachable})
	var kept []map[string]string
	for _, m := range logs2.with("discovery failed") {
		if m["err"] == unreachable.Error() {
			kept = append(kept, m)
		}
	}
	if len(kept) != 1 || kept[0]["msg"] != "discovery failed; keeping the endpoints known last" || kept[0]["endpoints"] != "1" {
		t.Errorf("with an instance known: %v", kept)
	}
}

// The whole stack with no Consul listening: each call fails once with an
// error that says Consul could not be reached at the address, the first
// with the hint; the Endpointer's log says it once, with the hint.
func TestConsulUnreachableSaidOnce(t *testing.T) {
	addr := testenv.ClosedAddr(t)
	var logs logLines
	c, err := trim.NewClient(client.Config{Consul: sd.ConsulConfig{Address: addr}, Service: "trimsvc"}, client.WithLogger(&logs))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want := fmt.Sprintf("no instance known (3 attempts): Consul could not be reached at http://%s: dial tcp %s: connect: connection refused; "+
		`so no instance of service "trimsvc" is known: no endpoints available`, addr, addr)
	for i, hint := range []string{"; " + consulname.UnreachableHint, "", ""} {
		_, err := c.TrimSpace(context.Background(), "x")
		if err == nil || err.Error() != want+hint {
			t.Errorf("call %d:\nwant %s%s\nhave %v", i+1, want, hint, err)
		}
		if re := retryError(t, err); re.Reached != 0 || status.Code(err) != codes.Unavailable || !errors.Is(err, lb.ErrNoEndpoints) {
			t.Errorf("call %d: %+v", i+1, re)
		}
	}
	lines := logs.with("discovery failed")
	if len(lines) != 1 || lines[0]["hint"] != consulname.UnreachableHint || !strings.HasPrefix(lines[0]["err"], "Consul could not be reached at http://"+addr+": ") {
		t.Errorf("want one line from the Endpointer, with the hint, have %v", lines)
	}
}

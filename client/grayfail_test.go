package client_test

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-kit/log"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/defaults"
	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport/trim"
)

// eventLog is a logger that keeps the time of each message it is given,
// and the "after" of each (why an instance was ejected).
type eventLog struct {
	mu     sync.Mutex
	seen   map[string][]time.Time
	afters []string
}

func (l *eventLog) Log(kv ...interface{}) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := 0; i+1 < len(kv); i += 2 {
		switch kv[i] {
		case "msg":
			l.seen[fmt.Sprint(kv[i+1])] = append(l.seen[fmt.Sprint(kv[i+1])], time.Now())
		case "after":
			l.afters = append(l.afters, fmt.Sprint(kv[i+1]))
		}
	}
	return nil
}

// firstAfter is the first "after" logged, "" if none was.
func (l *eventLog) firstAfter() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.afters) == 0 {
		return ""
	}
	return l.afters[0]
}

func (l *eventLog) first(msg string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ts := l.seen[msg]; len(ts) > 0 {
		return ts[0], true
	}
	return time.Time{}, false
}

// grayFailure puts 3 instances, checked by Consul every 5s as by default,
// under open-loop load at 200 calls a second through a default client, does
// harm to one of them, and returns the calls, when it did it and what the
// client logged.
func grayFailure(t *testing.T, harm func(victimPID int), lasting time.Duration, heal func(victimPID int)) ([]loadgen.Call, time.Time, *eventLog) {
	t.Helper()
	agent, insts := cluster(t, 3, "-check-interval", "5s")
	events := &eventLog{seen: map[string][]time.Time{}}
	c, err := trim.NewClient(client.Config{Consul: sd.ConsulConfig{Address: agent.HTTPAddr}}, client.WithLogger(events))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	waitInstances(t, c.Endpoint(), 3)
	victim := insts[0]
	t.Cleanup(func() { _ = victim.Signal(syscall.SIGCONT) }) // so that it can be reaped

	load := loadgen.Start(context.Background(), c.Endpoint(), "g r a y", loadgen.Options{Rate: 200})
	time.Sleep(500 * time.Millisecond)
	harmedAt := time.Now()
	harm(victim.PID())
	time.Sleep(lasting)
	if heal != nil {
		heal(victim.PID())
	}
	time.Sleep(time.Second)
	calls, _ := load.Stop()
	return calls, harmedAt, events
}

func TestSIGSTOPUnderLoadNoFailuresAndNoSlowCallsAfterOneSecond(t *testing.T) {
	calls, stoppedAt, events := grayFailure(t,
		func(pid int) { _ = syscall.Kill(pid, syscall.SIGSTOP) }, 5*time.Second,
		func(pid int) { _ = syscall.Kill(pid, syscall.SIGCONT) })
	if want, have := 0, failures(t, calls); want != have {
		t.Errorf("failures: want %d, have %d of %d", want, have, len(calls))
	}
	share := defaults.RetryTimeout / defaults.MaxAttempts
	slow := 0
	for _, c := range calls {
		if c.Start.After(stoppedAt.Add(time.Second)) && c.Took > share {
			if slow < 5 {
				t.Logf("call due %v after SIGSTOP took %v", c.Start.Sub(stoppedAt).Round(time.Millisecond), c.Took)
			}
			slow++
		}
	}
	if slow > 0 {
		t.Errorf("%d calls due more than 1s after SIGSTOP took longer than one attempt share (%v)", slow, share)
	}
	ejectedAt, ok := events.first("instance ejected")
	if !ok {
		t.Fatal("the stopped instance was never ejected")
	}
	t.Logf("%d calls; ejected %v after SIGSTOP (an attempt share is %v)", len(calls), ejectedAt.Sub(stoppedAt).Round(time.Millisecond), share)
}

func TestSIGKILLUnderLoadNoFailures(t *testing.T) {
	calls, killedAt, _ := grayFailure(t, func(pid int) { _ = syscall.Kill(pid, syscall.SIGKILL) }, 2*time.Second, nil)
	if want, have := 0, failures(t, calls); want != have {
		t.Errorf("failures: want %d, have %d of %d", want, have, len(calls))
	}
	var worst time.Duration
	for _, c := range calls {
		if c.Start.After(killedAt) {
			worst = max(worst, c.Took)
		}
	}
	t.Logf("%d calls; slowest after the kill %v", len(calls), worst.Round(time.Microsecond))
}

var _ log.Logger = (*eventLog)(nil)

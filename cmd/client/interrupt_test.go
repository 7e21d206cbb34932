package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-kit/kit/metrics/generic"
	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"

	"github.com/trimkit/trimkit/internal/consulname"
	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/pb"
	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
)

// slowTrim answers after delay, unless its call is cancelled first; it
// counts the calls in flight and those cancelled.
type slowTrim struct {
	delay     atomic.Int64 // time.Duration
	inflight  atomic.Int64
	cancelled atomic.Int64
	answered  atomic.Int64
}

func (s *slowTrim) TrimSpace(ctx context.Context, in string) (string, error) {
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	t := time.NewTimer(time.Duration(s.delay.Load()))
	defer t.Stop()
	select {
	case <-t.C:
		s.answered.Add(1)
		return strings.TrimSpace(in), nil
	case <-ctx.Done():
		s.cancelled.Add(1)
		return "", ctx.Err()
	}
}

// waitInflight waits until s has n calls in flight.
func (s *slowTrim) waitInflight(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for s.inflight.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls in flight after 20s, want %d", s.inflight.Load(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startSlowInstance serves s over gRPC on loopback and registers it in
// agent as an instance of service (no check: passing).
func startSlowInstance(t *testing.T, agent *testenv.Agent, service string, s *slowTrim) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := grpc.NewServer()
	pb.RegisterTrimServer(server, trim.NewGRPCServer(trimsvc.NewServerSet(s), service+"-1", log.NewNopLogger()))
	go func() { _ = server.Serve(l) }()
	t.Cleanup(server.Stop)
	port := l.Addr().(*net.TCPAddr).Port
	if err := agent.API().Agent().ServiceRegister(&api.AgentServiceRegistration{ID: service + "-1", Name: service, Address: "127.0.0.1", Port: port}); err != nil {
		t.Fatal(err)
	}
	agent.WaitPassing(service, service+"-1")
}

// The first SIGINT stops a load run without cancelling its calls in
// flight: they end by themselves, and count as answered; the summary is
// printed and the exit status is 1 (interrupted). A second signal cancels
// what is in flight at once.
func TestInterruptLetsCallsInFlightEnd(t *testing.T) {
	agent := testenv.Consul(t)
	slow := &slowTrim{}
	slow.delay.Store(int64(400 * time.Millisecond))
	startSlowInstance(t, agent, "slowtrim", slow)
	args := []string{"-consul-addr", agent.HTTPAddr, "-service-name", "slowtrim", "-c", "4", "-duration", "60s",
		"-retry-max", "1", "-retry-timeout", "60s", "-json", " a b "}

	p := testenv.Start(t, bins.Client(t), args...)
	slow.waitInflight(t, 4)
	if err := p.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code, err := p.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var s loadgen.Summary
	if err := json.Unmarshal([]byte(p.Stdout()), &s); err != nil {
		t.Fatalf("no JSON summary: %v: %q", err, p.Stdout())
	}
	stderr := strings.Join(p.Lines(), "\n")
	if code != 1 || s.Requests < 4 || s.Failures != 0 || slow.cancelled.Load() != 0 || int64(s.Requests) != slow.answered.Load() {
		t.Errorf("want exit 1 after every call in flight answered (%d answered, %d cancelled); have exit %d, summary %+v\n%s",
			slow.answered.Load(), slow.cancelled.Load(), code, s, stderr)
	}
	for _, want := range []string{"client: stopping: no new requests; waiting for those in flight", "client: interrupted after " + strconv.Itoa(s.Requests) + " requests, 0 failed"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}

	// A second signal: the calls in flight are cancelled, and fail.
	slow.delay.Store(int64(time.Minute))
	answered := slow.answered.Load()
	p = testenv.Start(t, bins.Client(t), args...)
	slow.waitInflight(t, 4)
	if err := p.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if _, err := p.WaitLine("client: stopping", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err = p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	s = loadgen.Summary{}
	if err := json.Unmarshal([]byte(p.Stdout()), &s); err != nil {
		t.Fatalf("no JSON summary: %v: %q", err, p.Stdout())
	}
	if code != 1 || s.Requests != 4 || s.Failures != 4 || slow.answered.Load() != answered {
		t.Errorf("second signal: want exit 1 with the 4 calls in flight failed; have exit %d, summary %+v\n%s", code, s, strings.Join(p.Lines(), "\n"))
	}
}

// The load loop, in process: after stop no call starts, the calls in
// flight end by themselves (also in an open loop), and the summary says so;
// after ctx ends they are cancelled.
func TestLoadStopsStartingCalls(t *testing.T) {
	slowCall := func(d time.Duration, inflight *atomic.Int64) func(context.Context, interface{}) (interface{}, error) {
		return func(ctx context.Context, _ interface{}) (interface{}, error) {
			inflight.Add(1)
			select {
			case <-time.After(d):
				return trim.TrimResponse{Instance: "a"}, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	for _, cfg := range []config{{c: 3, duration: time.Minute, json: true, text: "x"}, {rate: 50, duration: time.Minute, json: true, text: "x"}} {
		var started atomic.Int64
		stop, stopped := context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, stopped)
		var stdout, stderr bytes.Buffer
		err := load(context.Background(), stop, slowCall(300*time.Millisecond, &started), &loadgen.Counter{}, cfg, &stdout, log.NewSyncWriter(&stderr), false)
		var s loadgen.Summary
		if jerr := json.Unmarshal(stdout.Bytes(), &s); jerr != nil {
			t.Fatalf("%+v: %v: %q", cfg, jerr, stdout.String())
		}
		if err == nil || !strings.Contains(err.Error(), "interrupted after") || s.Failures != 0 || int64(s.Requests) != started.Load() || s.Requests == 0 {
			t.Errorf("%+v: want every call started (%d) answered and an interruption, have %v, %+v", cfg, started.Load(), err, s)
		}
	}

	// ctx ends: the calls in flight are cancelled.
	var started atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	stop, stopped := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, func() { stopped(); time.AfterFunc(50*time.Millisecond, cancel) })
	var stdout, stderr bytes.Buffer
	begin := time.Now()
	err := load(ctx, stop, slowCall(time.Minute, &started), &loadgen.Counter{}, config{c: 2, n: 100, json: true, text: "x"}, &stdout, log.NewSyncWriter(&stderr), false)
	var s loadgen.Summary
	if jerr := json.Unmarshal(stdout.Bytes(), &s); jerr != nil {
		t.Fatal(jerr)
	}
	if err == nil || s.Requests != 2 || s.Failures != 2 || time.Since(begin) > 30*time.Second {
		t.Errorf("cancelled: want both calls failed at once, have %v, %+v after %v", err, s, time.Since(begin))
	}
	if !strings.Contains(stderr.String(), "failure: context canceled") {
		t.Errorf("stderr: %s", stderr.String())
	}
}

// With no Consul listening, the command says what failed once: one line,
// with the hint, not the discovery's log lines too.
func TestNoConsulSaidOnce(t *testing.T) {
	addr := testenv.ClosedAddr(t)
	for _, tc := range []struct {
		args  []string
		lines int // on stderr
	}{
		{[]string{"x"}, 1},
		// The failure, and the exit's summary line.
		{[]string{"-n", "5", "x"}, 2},
	} {
		p, code := runClient(t, append([]string{"-consul-addr", addr}, tc.args...)...)
		lines := p.Lines()
		stderr := strings.Join(lines, "\n")
		if code != 1 || len(lines) != tc.lines || strings.Count(stderr, "Consul could not be reached at http://"+addr) != 1 ||
			strings.Count(stderr, consulname.UnreachableHint) != 1 || strings.Contains(stderr, "attempt(s)") {
			t.Errorf("%q: want exit 1 and %d lines saying once that Consul could not be reached, with the hint; have exit %d:\n%s", tc.args, tc.lines, code, stderr)
		}
	}
}

// discoveryLog holds back the discovery's failures while no instance is
// known, and lets everything else through.
func TestDiscoveryLogHoldsBackWhileNothingIsKnown(t *testing.T) {
	var buf bytes.Buffer
	d := &discoveryLog{next: log.NewLogfmtLogger(&buf), instances: generic.NewGauge("instances")}
	for _, msg := range []string{"first consul query failed", "consul query failed; keeping the last known instances",
		"discovery failed and no instance is known: calls fail until it succeeds"} {
		_ = d.Log("level", "warn", "msg", msg, "err", errors.New("boom"))
	}
	_ = d.Log("level", "info", "msg", "instance ejected", "instance", "a")
	if want, have := "level=info msg=\"instance ejected\" instance=a\n", buf.String(); want != have {
		t.Errorf("want %q, have %q", want, have)
	}
	// Once the client holds instances, a failed query is the only sign
	// that discovery fails: it passes.
	buf.Reset()
	d.instances.Set(2)
	_ = d.Log("level", "warn", "msg", "consul query failed; keeping the last known instances")
	if want, have := "level=warn msg=\"consul query failed; keeping the last known instances\"\n", buf.String(); want != have {
		t.Errorf("with instances known: want %q, have %q", want, have)
	}
}

package client_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd/lb"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/consultest"
	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/internal/proctest"
	"github.com/trimkit/trimkit/trimsvc"
)

// trimsvcBin is the trimsvc built once for the integration tests.
var trimsvcBin string

func TestMain(m *testing.M) {
	proctest.RunMain(m, map[string]*string{"github.com/trimkit/trimkit/cmd/trimsvc": &trimsvcBin})
}

// cluster starts an agent and n trimsvc instances and waits until all pass.
func cluster(t *testing.T, n int, args ...string) (*consultest.Agent, []proctest.Trimsvc) {
	t.Helper()
	agent := consultest.Start(t)
	var insts []proctest.Trimsvc
	var ids []string
	for range n {
		inst := proctest.StartTrimsvc(t, trimsvcBin, agent.HTTPAddr, args...)
		insts = append(insts, inst)
		ids = append(ids, inst.ID)
	}
	agent.WaitPassing("trimsvc", ids...)
	return agent, insts
}

func newClient(t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return c
}

// waitEndpoints calls until the client has answers from want distinct
// instances, so that its discovery has caught up.
func waitInstances(t *testing.T, e endpoint.Endpoint, want int) {
	t.Helper()
	seen := map[string]bool{}
	deadline := time.Now().Add(5 * time.Second)
	for len(seen) < want {
		if time.Now().After(deadline) {
			t.Fatalf("client saw %d instances within 5s, want %d", len(seen), want)
		}
		resp, err := e(context.Background(), trimsvc.TrimRequest{S: "warm up"})
		if err == nil {
			seen[resp.(trimsvc.TrimResponse).Instance] = true
		}
	}
}

func TestRoundRobinOverThreeInstances(t *testing.T) {
	agent, insts := cluster(t, 3)
	c := newClient(t, client.Config{ConsulAddr: agent.HTTPAddr})
	waitInstances(t, c.Endpoint(), 3)

	per := map[string]int{}
	for range 300 {
		resp, err := c.Endpoint()(context.Background(), trimsvc.TrimRequest{S: " a b "})
		if err != nil {
			t.Fatal(err)
		}
		r := resp.(trimsvc.TrimResponse)
		if r.Err != nil || r.S != "ab" {
			t.Fatalf("want ab, have %q (%v)", r.S, r.Err)
		}
		per[r.Instance]++
	}
	for _, inst := range insts {
		if n := per[inst.ID]; n < 90 || n > 110 {
			t.Errorf("%s answered %d of 300, want 100±10", inst.ID, n)
		}
	}
	// The typed Service works too.
	out, err := c.TrimSpace(context.Background(), "x\ty")
	if err != nil || out != "xy" {
		t.Errorf("TrimSpace: %q, %v", out, err)
	}
}

// runLoad sends n requests from c callers and calls at(i) when request i
// (counted from 1) starts; it returns every call.
func runLoad(e endpoint.Endpoint, n, c int, at func(i int64)) []loadgen.Call {
	var (
		next atomic.Int64
		mu   sync.Mutex
		all  []loadgen.Call
		wg   sync.WaitGroup
	)
	req := trimsvc.TrimRequest{S: "l o a d"}
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				at(i)
				call := loadgen.Do(context.Background(), e, req)
				mu.Lock()
				all = append(all, call)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return all
}

func failures(t *testing.T, calls []loadgen.Call) int {
	t.Helper()
	n := 0
	for _, c := range calls {
		if c.Err != nil {
			if n < 5 {
				t.Logf("failure: %v", c.Err)
			}
			n++
		}
	}
	return n
}

func TestSIGKILLDuringLoadNoFailures(t *testing.T) {
	agent, insts := cluster(t, 3)
	c := newClient(t, client.Config{ConsulAddr: agent.HTTPAddr})
	waitInstances(t, c.Endpoint(), 3)

	var once sync.Once
	results := runLoad(c.Endpoint(), 2000, 8, func(i int64) {
		if i == 300 {
			once.Do(func() {
				if err := insts[0].Signal(syscall.SIGKILL); err != nil {
					t.Error(err)
				}
			})
		}
	})
	if want, have := 0, failures(t, results); want != have {
		t.Errorf("failures: want %d, have %d of %d", want, have, len(results))
	}
	if want, have := 2000, len(results); want != have {
		t.Errorf("requests: want %d, have %d", want, have)
	}
}

func TestConsulStoppedDuringLoadNoFailures(t *testing.T) {
	agent, _ := cluster(t, 3)
	c := newClient(t, client.Config{ConsulAddr: agent.HTTPAddr})
	waitInstances(t, c.Endpoint(), 3)

	stopped := make(chan struct{})
	results := runLoad(c.Endpoint(), 3000, 8, func(i int64) {
		if i == 300 {
			go func() {
				defer close(stopped)
				if err := agent.Stop(); err != nil {
					t.Error(err)
				}
			}()
		}
		if i == 2000 {
			<-stopped // the rest runs with Consul gone
		}
	})
	if want, have := 0, failures(t, results); want != have {
		t.Errorf("failures: want %d, have %d of %d", want, have, len(results))
	}
	per := map[string]int{}
	for _, r := range results[2000:] {
		per[r.Instance]++
	}
	if want, have := 3, len(per); want != have {
		t.Errorf("with consul down: want the 3 known instances answering, have %v", per)
	}
}

func TestJoinAndLeaveDuringLoad(t *testing.T) {
	agent, insts := cluster(t, 2)
	c := newClient(t, client.Config{ConsulAddr: agent.HTTPAddr})
	waitInstances(t, c.Endpoint(), 2)
	load := loadgen.Record(c.Endpoint(), "x", 4)

	joined := proctest.StartTrimsvc(t, trimsvcBin, agent.HTTPAddr)
	passingAt := agent.WaitPassing("trimsvc", insts[0].ID, insts[1].ID, joined.ID)

	if err := insts[0].Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	goneAt := agent.WaitPassing("trimsvc", insts[1].ID, joined.ID)
	time.Sleep(time.Second)
	results := load.Stop()

	if want, have := 0, failures(t, results); want != have {
		t.Errorf("failures: want %d, have %d of %d", want, have, len(results))
	}
	var firstJoined time.Time
	late := 0
	for _, r := range results {
		if r.Instance == joined.ID && (firstJoined.IsZero() || r.Start.Before(firstJoined)) {
			firstJoined = r.Start
		}
		// A margin for the client's blocking query to return after the
		// poll above saw the instance gone.
		if r.Instance == insts[0].ID && r.Start.After(goneAt.Add(250*time.Millisecond)) {
			late++
		}
	}
	if firstJoined.IsZero() {
		t.Fatal("the new instance never answered")
	}
	t.Logf("new instance answered %v after it was seen passing; %d requests in all", firstJoined.Sub(passingAt).Round(time.Millisecond), len(results))
	if d := firstJoined.Sub(passingAt); d > time.Second {
		t.Errorf("new instance first answered %v after passing, want within 1s", d)
	}
	if late > 0 {
		t.Errorf("%d requests reached %s after it left consul", late, insts[0].ID)
	}
}

var invalidArgumentRE = regexp.MustCompile(`trimsvc_requests_total\{code="InvalidArgument",method="TrimSpace"\} (\d+)`)

func TestOversizeInputIsOneAttempt(t *testing.T) {
	agent, insts := cluster(t, 3, "-http-addr", "127.0.0.1:0", "-max-input-bytes", "16")
	c := newClient(t, client.Config{ConsulAddr: agent.HTTPAddr})
	waitInstances(t, c.Endpoint(), 3)

	_, err := c.TrimSpace(context.Background(), strings.Repeat("x", 17))
	if !errors.Is(err, trimsvc.ErrInputTooLarge) {
		t.Fatalf("want ErrInputTooLarge, have %v", err)
	}
	if want, have := codes.InvalidArgument, status.Code(err); want != have {
		t.Errorf("want %v, have %v", want, have)
	}
	total := 0
	for _, inst := range insts {
		resp, err := http.Get("http://" + inst.HTTPAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if m := invalidArgumentRE.FindSubmatch(body); m != nil {
			n, _ := strconv.Atoi(string(m[1]))
			total += n
		}
	}
	if want, have := 1, total; want != have {
		t.Errorf("InvalidArgument requests reaching servers: want %d, have %d", want, have)
	}
}

func TestNoInstancesNamesWhatWasSearched(t *testing.T) {
	agent := consultest.Start(t)
	c := newClient(t, client.Config{ConsulAddr: agent.HTTPAddr, ServiceName: "absent", Tags: []string{"blue", "v2"}, RetryTimeout: 300 * time.Millisecond})
	start := time.Now()
	_, err := c.TrimSpace(context.Background(), "x")
	took := time.Since(start)
	if err == nil {
		t.Fatal("want error")
	}
	for _, want := range []string{`"absent"`, `"blue"`, `"v2"`, agent.HTTPAddr} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %s", err, want)
		}
	}
	if !errors.Is(err, lb.ErrNoEndpoints) {
		t.Errorf("want errors.Is ErrNoEndpoints: %v", err)
	}
	var nie *client.NoInstancesError
	if !errors.As(err, &nie) {
		t.Errorf("want *NoInstancesError, have %T", err)
	}
	if want, have := codes.Unavailable, status.Code(err); want != have {
		t.Errorf("want %v, have %v", want, have)
	}
	if took > 400*time.Millisecond {
		t.Errorf("took %v, past the 300ms retry timeout", took)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []client.Config{{RetryMax: -1}, {RetryTimeout: -time.Second}} {
		if _, err := client.New(cfg); err == nil {
			t.Errorf("%+v: want error", cfg)
		}
	}
}

func TestCloseLeaksNothing(t *testing.T) {
	agent, _ := cluster(t, 2)
	opts := []goleak.Option{goleak.IgnoreCurrent()}

	c, err := client.New(client.Config{ConsulAddr: agent.HTTPAddr})
	if err != nil {
		t.Fatal(err)
	}
	waitInstances(t, c.Endpoint(), 2)
	// Let the instancer settle into a blocking query, then close under it.
	time.Sleep(200 * time.Millisecond)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	goleak.VerifyNone(t, opts...)
}

func TestCloseLeaksNothingWhileConsulDown(t *testing.T) {
	agent := consultest.Start(t)
	if err := agent.Stop(); err != nil {
		t.Fatal(err)
	}
	opts := []goleak.Option{goleak.IgnoreCurrent()}
	c, err := client.New(client.Config{ConsulAddr: agent.HTTPAddr})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond) // in its backoff between failed queries
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, opts...)
}

package orders_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-kit/log"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/examples/orders"
	"github.com/trimkit/trimkit/internal/proc"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/sd"
)

var bins testenv.Binaries

func TestMain(m *testing.M) { bins.Main(m) }

// The load: rate calls a second, CreateOrder and GetOrder in turn, for
// calls/rate; one instance gets SIGTERM at termAt, another SIGKILL at
// killAt.
const (
	rate   = 200
	calls  = 1200 // 6s
	termAt = 400  // 2s in
	killAt = 800  // 4s in
	// maxUnknown bounds the CreateOrder calls that may fail: those in flight
	// on the killed instance when it died, whose outcome the caller cannot
	// know (the request may have been written), so it must not retry them.
	maxUnknown = 3
)

// TestNoCreateSentTwice runs three servers on a real Consul agent and the
// client stack the example client builds, under an open-loop load of
// CreateOrder and GetOrder; it stops one server with SIGTERM and kills
// another with SIGKILL. No GetOrder fails (retried on another instance);
// no CreateOrder fails but those in flight on the killed instance, each
// after one attempt; and the servers' ledgers show that no CreateOrder
// reached an instance twice, and every answered one reached exactly the
// instance that answered it.
func TestNoCreateSentTwice(t *testing.T) {
	agent := testenv.Consul(t)
	bin := bins.Path(t, "github.com/trimkit/trimkit/examples/orders/server")
	dir := t.TempDir()

	servers := make([]server, 3)
	for i := range servers {
		ledger := filepath.Join(dir, fmt.Sprintf("ledger-%d", i))
		servers[i] = *startServer(t, bin, agent.HTTPAddr, "-ledger", ledger)
		servers[i].ledger = ledger
	}
	agent.WaitPassing("orders", servers[0].id, servers[1].id, servers[2].id)
	term, kill := &servers[0], &servers[1]

	// The stack the example client builds, with a longer retry timeout, and
	// each attempt counted and its error tagged with its instance's address.
	var seen attempts
	c, err := client.New(client.Config{
		Consul:  sd.ConsulConfig{Address: agent.HTTPAddr},
		Service: "orders",
		CallConfig: client.CallConfig{
			Balancer: client.P2CName,
			Retry:    client.RetryConfig{Idempotent: orders.Idempotent, Timeout: 2 * time.Second},
		},
	}, seen.tagged(orders.Endpoints), client.WithLogger(log.NewLogfmtLogger(testWriter{t})))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	var (
		r        results
		wg       sync.WaitGroup
		start    = time.Now()
		termedAt time.Time
		killedAt time.Time
	)
	ticker := time.NewTicker(time.Second / rate)
	for i := range calls {
		<-ticker.C
		switch i {
		case termAt:
			termedAt = time.Now()
			if err := term.p.Signal(syscall.SIGTERM); err != nil {
				t.Error(err) // not Fatal: the calls in flight are waited for
			}
		case killAt:
			killedAt = time.Now()
			kill.p.Kill()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.call(c.Endpoint(), i)
		}()
	}
	ticker.Stop()
	wg.Wait()
	elapsed := time.Since(start)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if code, err := term.p.Wait(ctx); code != 0 || err != nil {
		t.Errorf("the SIGTERMed instance: exit %d, %v; want a clean exit", code, err)
	}

	// The ledgers: which instance each CreateOrder reached, and how often.
	reached := map[string][]string{} // request_id -> IDs of the instances it reached, once per arrival
	for _, s := range servers {
		for _, id := range readLines(t, s.ledger) {
			reached[id] = append(reached[id], s.id)
		}
	}
	var duplicates, unknown, lost, misplaced int
	for id, on := range reached {
		if len(on) > 1 {
			duplicates++
			t.Errorf("CreateOrder %s reached instances %d times: %v", id, len(on), on)
		}
		if _, sent := r.creates[id]; !sent {
			unknown++
			t.Errorf("a ledger holds %q, never sent", id)
		}
	}
	var failedCreates, failedOnTerm int
	for id, res := range r.creates {
		if res.err == nil {
			switch on := reached[id]; {
			case len(on) == 0:
				lost++
				t.Errorf("CreateOrder %s answered by %s, in no ledger", id, res.order.GetInstance())
			case on[0] != res.order.GetInstance():
				misplaced++
				t.Errorf("CreateOrder %s answered by %s, in %s's ledger", id, res.order.GetInstance(), on[0])
			}
			continue
		}
		failedCreates++
		var (
			re *client.RetryError
			ae *attemptError
		)
		reachedOne := errors.As(res.err, &ae)
		if reachedOne && ae.addr == term.addr {
			failedOnTerm++
		}
		switch {
		case !errors.As(res.err, &re) || re.Attempts != 1 || !re.OutcomeUnknown:
			t.Errorf("CreateOrder %s failed other than after exactly one attempt whose outcome is unknown: %v", id, res.err)
		case status.Code(res.err) != codes.Unavailable:
			t.Errorf("CreateOrder %s failed with %v, want Unavailable (in flight on the killed instance): %v", id, status.Code(res.err), res.err)
		case !reachedOne:
			t.Errorf("CreateOrder %s failed without reaching an instance: %v", id, res.err)
		case ae.addr != kill.addr:
			t.Errorf("CreateOrder %s failed on %s, not the killed instance %s: %v", id, ae.addr, kill.addr, res.err)
		case res.done.Before(killedAt):
			t.Errorf("CreateOrder %s failed at %v, before the kill at %v: %v", id, res.done.Sub(start), killedAt.Sub(start), res.err)
		default:
			t.Logf("CreateOrder %s, started %v from the kill, failed on the killed instance after one attempt: %v", id, res.at.Sub(killedAt), res.err)
		}
	}
	for _, err := range r.getErrs {
		var ae *attemptError
		if errors.As(err, &ae) && ae.addr == term.addr {
			failedOnTerm++
		}
		t.Errorf("GetOrder failed: %v", err)
	}
	if failedCreates > maxUnknown {
		t.Errorf("%d CreateOrder calls failed; want at most %d (those in flight on the killed instance)", failedCreates, maxUnknown)
	}

	// The load reached the instances the test stopped, and the survivor
	// answered after the kill.
	seen.mu.Lock()
	if seen.by[term.addr] == 0 || seen.by[kill.addr] == 0 {
		t.Errorf("attempts on the SIGTERMed instance: %d, on the killed one: %d; want some on each", seen.by[term.addr], seen.by[kill.addr])
	}
	if r.answeredBy(servers[2].id, killedAt) == 0 {
		t.Errorf("the surviving instance answered no call after the kill")
	}
	createAttempts, createsRetried := 0, 0
	for _, n := range seen.creates {
		createAttempts += n
		if n > 1 {
			createsRetried++
		}
	}
	t.Logf("%d calls in %v (SIGTERM at %v, SIGKILL at %v); "+
		"creates: %d, %d attempts, %d retried, %d failed, %d answered but in no ledger; "+
		"gets: %d, %d attempts, %d found, %d not found on the instance asked, %d failed; "+
		"attempts (failed) on the SIGTERMed instance %d (%d), the killed one %d (%d), the survivor %d (%d); "+
		"request_ids in the ledgers: %d, sent twice: %d, never sent: %d, in another instance's ledger: %d; "+
		"orders answered by the SIGTERMed instance %d, the killed one %d, the survivor %d",
		calls, elapsed.Round(time.Millisecond), termedAt.Sub(start).Round(time.Millisecond), killedAt.Sub(start).Round(time.Millisecond),
		len(r.creates), createAttempts, createsRetried, failedCreates, lost,
		r.gets, seen.gets, r.found, r.notFound, len(r.getErrs),
		seen.by[term.addr], seen.failed[term.addr], seen.by[kill.addr], seen.failed[kill.addr], seen.by[servers[2].addr], seen.failed[servers[2].addr],
		len(reached), duplicates, unknown, misplaced,
		r.answeredBy(term.id, start), r.answeredBy(kill.id, start), r.answeredBy(servers[2].id, start))
	seen.mu.Unlock()
	if failedOnTerm != 0 {
		t.Errorf("%d calls failed on the SIGTERMed instance; want none", failedOnTerm)
	}
}

// server is one server process of the test.
type server struct {
	p      *proc.Process
	id     string // its service ID
	addr   string // where it serves, host:port
	ledger string
}

// startServer starts the orders server bin against the agent at
// consulAddr, draining for 1s and checked every second, with args, and
// returns it once it is registered and serving.
func startServer(t *testing.T, bin, consulAddr string, args ...string) *server {
	t.Helper()
	s := &server{p: testenv.Start(t, bin, append([]string{"-consul-addr", consulAddr, "-drain", "1s", "-check-interval", "1s"}, args...)...)}
	line, err := s.p.WaitLine("registered in consul", 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s.id = field(t, line, "id")
	if line, err = s.p.WaitLine("serving gRPC", 0); err != nil {
		t.Fatal(err)
	}
	s.addr = field(t, line, "advertised")
	return s
}

// field is the value of key in a logfmt line.
func field(t *testing.T, line, key string) string {
	t.Helper()
	m := regexp.MustCompile(`\b` + key + `=(\S+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no %s in %q", key, line)
	}
	return m[1]
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

// testWriter writes a logger's lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

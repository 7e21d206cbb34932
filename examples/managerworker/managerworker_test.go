package managerworker_test

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trimkit/trimkit/internal/consulname"
	"github.com/trimkit/trimkit/internal/proc"
	"github.com/trimkit/trimkit/internal/testenv"
)

var bins testenv.Binaries

func TestMain(m *testing.M) { bins.Main(m) }

// TestManagerAndWorkers runs the example as the README shows it, against a
// real agent: two workers first (one ten times slower than the other),
// which find the manager once it registers and check in with it; the
// manager sends its jobs to the least-loaded worker, so the slow one gets
// far fewer, and none is lost. Then every process leaves Consul: no
// registration and no load report is left behind.
func TestManagerAndWorkers(t *testing.T) {
	agent := testenv.Consul(t)
	c := agent.API()
	workerBin := bins.Path(t, "github.com/trimkit/trimkit/examples/managerworker/worker")
	managerBin := bins.Path(t, "github.com/trimkit/trimkit/examples/managerworker/manager")
	consul := []string{"-consul-addr", agent.HTTPAddr}

	fast := testenv.Start(t, workerBin, append(consul, "-work", "2ms", "-slots", "4", "-load-report-interval", "500ms")...)
	slow := testenv.Start(t, workerBin, append(consul, "-work", "20ms", "-slots", "4", "-load-report-interval", "500ms")...)
	for _, w := range []*proc.Process{fast, slow} {
		if _, err := w.WaitLine("msg=working", 15*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	fastID, slowID := workerID(t, fast), workerID(t, slow)
	testenv.WaitPassing(t, c, "worker", func(ids []string) bool { return len(ids) == 2 })
	// Let the load reports in before the jobs start.
	time.Sleep(time.Second)

	const jobs = 1000
	manager := testenv.Start(t, managerBin, append(consul, "-workers", "2", "-jobs", strconv.Itoa(jobs), "-rate", "400")...)
	for _, w := range []*proc.Process{fast, slow} {
		if _, err := w.WaitLine("checked in with manager", 15*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if code, err := manager.Wait(ctx); code != 0 || err != nil {
		t.Fatalf("manager: exit %d, %v", code, err)
	}
	out := manager.Stdout()
	t.Logf("manager:\n%s", out)
	for _, id := range []string{fastID, slowID} {
		if !strings.Contains(out, "worker checked in: "+id) {
			t.Errorf("the manager did not report %s's check-in", id)
		}
	}
	if !regexp.MustCompile(`sent 1000 jobs in \S+: 1000 done, 0 rejected, \d+ attempts failed`).MatchString(out) {
		t.Fatalf("want all 1000 jobs done:\n%s", out)
	}
	nFast, nSlow := jobsOf(t, out, fastID), jobsOf(t, out, slowID)
	if nFast+nSlow != jobs {
		t.Errorf("fast %d + slow %d jobs, want %d", nFast, nSlow, jobs)
	}
	// The slow worker serves at most 200 jobs/s against the fast one's
	// 2,000; with 400/s sent, round robin would give it half.
	if nSlow*4 > jobs {
		t.Errorf("the slow worker did %d of %d jobs; least-loaded should give it well under a quarter", nSlow, jobs)
	}
	if services, err := c.Agent().ServicesWithFilter(`Service == "manager"`); err != nil || len(services) != 0 {
		t.Errorf("the manager is still registered after it exited: %v (%v)", services, err)
	}

	for _, w := range []*proc.Process{fast, slow} {
		if err := w.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code, err := w.Wait(ctx); code != 0 || err != nil {
			t.Errorf("worker after SIGTERM: exit %d, %v", code, err)
		}
	}
	services, err := c.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	if len(services) != 0 {
		t.Errorf("services left registered: %v", services)
	}
	keys, _, err := c.KV().Keys(consulname.LoadPrefix("worker"), "", nil)
	if err != nil || len(keys) != 0 {
		t.Errorf("load reports left: %v (%v)", keys, err)
	}
}

// workerID is the ID a worker logs itself under.
func workerID(t *testing.T, p *proc.Process) string {
	t.Helper()
	line, err := p.WaitLine("msg=working", 0)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`\bid=(\S+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no id in %q", line)
	}
	return m[1]
}

// jobsOf is the number of jobs the manager says worker id did.
func jobsOf(t *testing.T, out, id string) int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(id) + `\s+(\d+) jobs$`).FindStringSubmatch(out)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

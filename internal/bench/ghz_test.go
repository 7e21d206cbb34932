package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trimkit/trimkit/internal/testenv"
)

// ghzRounds, ghzCalls, ghzConcurrency and ghzConnections are the
// server-side throughput bench's load: ghz's -c 8 over 2 connections,
// 40,000 calls a run, each server in turn in each round.
const (
	ghzRounds      = 3
	ghzCalls       = 40000
	ghzConcurrency = 8
	ghzConnections = 2
)

// BenchmarkServerThroughput measures the calls a second ghz (pinned in
// tools/ghz, built by `make ghz`) gets through TrimSpace, closed loop,
// from trimsvc with its default Limits (a real process, registered in a
// Consul dev agent) and from a bare grpc-go server of the same proto
// (internal/bench/bareserver: no go-kit, limits, health or header), in
// interleaved rounds. It reports each server's calls a second over all
// rounds as "<server>-calls/s", each round's ratio as
// "round<N>-trimsvc/bare", and the ratio over all rounds as
// "trimsvc/bare". Run with -benchtime 1x.
func BenchmarkServerThroughput(b *testing.B) {
	root := testenv.ModuleRoot(b)
	ghz := filepath.Join(root, "bin", "ghz")
	if _, err := os.Stat(ghz); err != nil {
		b.Fatalf("%v: run `make ghz` (make bench does) to build it", err)
	}
	agent := testenv.Consul(b)
	trimsvc := testenv.StartTrimsvc(b, bins.Trimsvc(b), agent.HTTPAddr)
	bare := testenv.Start(b, bins.Path(b, "github.com/trimkit/trimkit/internal/bench/bareserver"))
	line, err := bare.WaitLine("listening on ", 10*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	bareAddr := strings.TrimSpace(line[strings.Index(line, "listening on ")+len("listening on "):])

	servers := []struct{ name, addr string }{{"trimsvc", trimsvc.Addr}, {"bare", bareAddr}}
	calls := map[string]float64{}
	took := map[string]float64{}
	for _, s := range servers { // warm up: connections, JIT of the servers' paths
		if _, _, err := runGHZ(ghz, root, s.addr, 2000); err != nil {
			b.Fatal(err)
		}
	}
	for round := range ghzRounds {
		rps := map[string]float64{}
		for k := range servers {
			s := servers[(round+k)%len(servers)] // each round starts at another server
			n, secs, err := runGHZ(ghz, root, s.addr, ghzCalls)
			if err != nil {
				b.Fatalf("%s: %v", s.name, err)
			}
			rps[s.name] = n / secs
			calls[s.name] += n
			took[s.name] += secs
		}
		b.ReportMetric(rps["trimsvc"]/rps["bare"], fmt.Sprintf("round%d-trimsvc/bare", round+1))
	}
	for _, s := range servers {
		b.ReportMetric(calls[s.name]/took[s.name], s.name+"-calls/s")
	}
	b.ReportMetric((calls["trimsvc"]/took["trimsvc"])/(calls["bare"]/took["bare"]), "trimsvc/bare")
}

// runGHZ runs n TrimSpace calls through ghz against addr and returns the
// calls that succeeded and the seconds they took; any failed call is an
// error.
func runGHZ(ghz, root, addr string, n int) (float64, float64, error) {
	out, err := exec.Command(ghz, "--insecure",
		"--proto", filepath.Join(root, "pb", "trim.proto"), "--call", "pb.Trim.TrimSpace",
		"-d", `{"s":"  hello,\ttrim kit  "}`,
		"-c", fmt.Sprint(ghzConcurrency), "--connections", fmt.Sprint(ghzConnections),
		"-n", fmt.Sprint(n), "--format", "json", addr).Output()
	if err != nil {
		return 0, 0, fmt.Errorf("ghz: %w", err)
	}
	var report struct {
		Total        int64            `json:"total"` // ns
		StatusCounts map[string]int64 `json:"statusCodeDistribution"`
	}
	if err := json.Unmarshal(out, &report); err != nil {
		return 0, 0, fmt.Errorf("ghz's report: %w", err)
	}
	ok := report.StatusCounts["OK"]
	if ok != int64(n) {
		return 0, 0, fmt.Errorf("ghz: %d of %d calls OK: %v", ok, n, report.StatusCounts)
	}
	return float64(ok), time.Duration(report.Total).Seconds(), nil
}

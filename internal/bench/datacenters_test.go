package bench

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/internal/proc"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
)

// BenchmarkDatacenterFailover runs the service in two WAN-federated
// datacenters (a dev agent each, 3 trimsvc instances each, checks every
// 1s) under 200 calls/s, open loop, through dc1's agent, for each way of
// failing over:
//
//   - bands: Config.Datacenters dc1, dc2 (priority bands, p2c);
//   - query: Discovery "query", a prepared query that fails over to dc2.
//
// Each row kills every dc1 instance (the time to the first dc2 answer, the
// calls that failed), starts them again on their addresses (the time
// until every call is back in dc1), then kills two of them (the share
// answered in dc2 while one of three is left; the band rule says 1 −
// 1.4/3 = 0.533). It reports the p99 of the calls answered in each
// datacenter: on loopback the WAN hop costs nothing, so they are alike.
// Run with -benchtime 1x.
func BenchmarkDatacenterFailover(b *testing.B) {
	for _, row := range []string{"bands", "query"} {
		b.Run(row, func(b *testing.B) { datacenterFailover(b, row) })
	}
}

func datacenterFailover(b *testing.B, row string) {
	agents := testenv.Datacenters(b, "dc1", "dc2")
	var insts [2][]*proc.Trimsvc
	dcOf := map[string]int{}
	for dc, a := range agents {
		var ids []string
		for range 3 {
			in := testenv.StartTrimsvc(b, bins.Trimsvc(b), a.HTTPAddr)
			insts[dc] = append(insts[dc], in)
			ids = append(ids, in.ID)
			dcOf[in.ID] = dc
		}
		a.WaitPassing("trimsvc", ids...)
	}
	cfg := client.Config{Consul: sd.ConsulConfig{Address: agents[0].HTTPAddr}, Service: "trimsvc"}
	switch row {
	case "bands":
		cfg.Datacenters, cfg.Balancer = []string{"dc1", "dc2"}, client.P2CName
	case "query":
		if _, _, err := agents[0].API().PreparedQuery().Create(&api.PreparedQueryDefinition{Name: "trimsvc-anywhere",
			Service: api.ServiceQuery{Service: "trimsvc", OnlyPassing: true, Failover: api.QueryFailoverOptions{Datacenters: []string{"dc2"}}}}, nil); err != nil {
			b.Fatal(err)
		}
		cfg.Discovery, cfg.Query = client.DiscoveryQuery, "trimsvc-anywhere"
	}
	c, err := trim.NewClient(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for range 100 { // warm: every instance connected
		_ = loadgen.Do(context.Background(), c.Endpoint(), trimsvc.TrimRequest{S: "warm"})
	}

	b.ResetTimer()
	run := loadgen.Start(context.Background(), c.Endpoint(), "x", loadgen.Options{Rate: 200})
	kill := func(victims []*proc.Trimsvc) time.Time {
		at := time.Now()
		for _, v := range victims {
			if err := v.Signal(syscall.SIGKILL); err != nil {
				b.Fatal(err)
			}
		}
		return at
	}
	time.Sleep(3 * time.Second)
	killed := kill(insts[0])
	time.Sleep(5 * time.Second)
	restarted := time.Now()
	for i, in := range insts[0] {
		insts[0][i] = testenv.StartTrimsvc(b, bins.Trimsvc(b), agents[0].HTTPAddr, "-grpc-addr", in.Addr)
	}
	time.Sleep(12 * time.Second)
	halved := kill(insts[0][:2])
	time.Sleep(6 * time.Second)
	end := time.Now()
	calls, _ := run.Stop()
	b.StopTimer()

	failed, failedAtKill := 0, 0
	firstRemote := time.Duration(-1)
	var local, remote []time.Duration
	for _, call := range calls {
		if call.Err != nil {
			failed++
			if !call.Start.Before(killed) && call.Start.Before(restarted) {
				failedAtKill++
			}
			continue
		}
		if dcOf[call.Instance] == 1 {
			remote = append(remote, call.Took)
			if firstRemote < 0 && !call.Start.Before(killed) {
				firstRemote = call.Start.Add(call.Took).Sub(killed)
			}
		} else {
			local = append(local, call.Took)
		}
	}
	back := time.Duration(-1)
	for at := restarted; at.Before(halved); at = at.Add(250 * time.Millisecond) {
		if n, share := remoteShare(calls, dcOf, at, at.Add(time.Second)); n > 0 && share == 0 {
			back = at.Sub(restarted)
			break
		}
	}
	_, spill := remoteShare(calls, dcOf, halved.Add(2*time.Second), end)
	local, remote = sorted(local), sorted(remote)
	b.ReportMetric(float64(len(calls)), "calls")
	b.ReportMetric(float64(failed), "failed")
	b.ReportMetric(float64(failedAtKill), "failed_at_dc_loss")
	b.ReportMetric(ms(firstRemote), "failover_ms")
	b.ReportMetric(ms(back), "back_ms")
	b.ReportMetric(spill, "spill_share")
	b.ReportMetric(float64(len(remote)), "remote_calls")
	b.ReportMetric(ms(loadgen.Percentile(local, 99)), "p99_local_ms")
	b.ReportMetric(ms(loadgen.Percentile(remote, 99)), "p99_remote_ms")
	b.ReportMetric(ms(loadgen.Percentile(local, 99.9)), "p999_local_ms")
	b.ReportMetric(ms(loadgen.Percentile(remote, 99.9)), "p999_remote_ms")
	if len(local) > 0 && len(remote) > 0 {
		b.ReportMetric(ms(max(local[len(local)-1], remote[len(remote)-1])), "max_ms")
	}
}

// remoteShare is how many calls started within [from, to) and the share
// of them that dc2 answered.
func remoteShare(calls []loadgen.Call, dcOf map[string]int, from, to time.Time) (int, float64) {
	n, r := 0, 0
	for _, c := range calls {
		if c.Start.Before(from) || !c.Start.Before(to) {
			continue
		}
		n++
		if c.Err == nil && dcOf[c.Instance] == 1 {
			r++
		}
	}
	if n == 0 {
		return 0, 0
	}
	return n, float64(r) / float64(n)
}

package main

import (
	"fmt"
	"io"
)

// datacenters prints BenchmarkDatacenterFailover: each way of failing
// over to a second datacenter, and what a real WAN would add.
func datacenters(w io.Writer, results map[string]result) {
	rows := []string{"bands", "query"}
	var have []string
	for _, row := range rows {
		if _, ok := results["BenchmarkDatacenterFailover/"+row]; ok {
			have = append(have, row)
		}
	}
	if len(have) == 0 {
		return
	}
	fmt.Fprintf(w, "\nDatacenter failover: two WAN-federated datacenters on loopback, 3 instances each, 200 calls/s open loop through dc1's agent\n")
	fmt.Fprintf(w, "bands: Config.Datacenters dc1,dc2 (p2c); query: a prepared query failing over to dc2 (Discovery \"query\")\n")
	fmt.Fprintf(w, "every dc1 instance killed: first dc2 answer after, calls failed; restarted: every call back in dc1 after; 2 of 3 killed: share answered in dc2 (the band rule: 1-1.4/3 = 0.533)\n")
	fmt.Fprintf(w, "%-6s %7s %7s %12s %11s %8s %7s %14s %14s %8s\n", "row", "calls", "failed", "failover ms", "back in ms", "spill", "remote", "p99 loc/rem", "p99.9 loc/rem", "max ms")
	for _, row := range have {
		r := results["BenchmarkDatacenterFailover/"+row]
		get := func(k string) float64 { return median(r[k]) }
		fmt.Fprintf(w, "%-6s %7.0f %7.0f %12.1f %11.0f %8.3f %7.0f %14s %14s %8.1f\n", row, get("calls"), get("failed"), get("failover_ms"), get("back_ms"),
			get("spill_share"), get("remote_calls"), fmt.Sprintf("%.2f/%.2f", get("p99_local_ms"), get("p99_remote_ms")),
			fmt.Sprintf("%.2f/%.2f", get("p999_local_ms"), get("p999_remote_ms")), get("max_ms"))
	}
	if r, ok := results["BenchmarkDatacenterFailover/bands"]; ok {
		local, spill := median(r["p99_local_ms"]), median(r["spill_share"])
		fmt.Fprintf(w, "The WAN hop here is loopback. Over a real WAN of RTT 30-80 ms, an answer from dc2 takes one RTT more (connections are up already):\n")
		fmt.Fprintf(w, "  calls served in dc2: p99 ~ %.1f + 30..80 = %.0f-%.0f ms; during the spill above, the mean call adds %.3f x 30..80 = %.0f-%.0f ms;\n",
			local, local+30, local+80, spill, spill*30, spill*80)
		fmt.Fprintf(w, "  with every dc1 instance gone, every call pays it; a retry that moves to dc2 pays it once more than its first attempt.\n")
	}
	if r, ok := results["BenchmarkDatacenterFailover/bands"]; ok {
		printTarget(w, median(r["failed"]) == 0, "bands: no failed call through every fault: %.0f failed", median(r["failed"]))
	}
}

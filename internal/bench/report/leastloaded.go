package main

import (
	"fmt"
	"io"
)

// leastLoaded prints BenchmarkLeastLoaded's table: per scenario and
// balancer, the first instance's share of the client's attempts and the
// latency of the client's calls and of the other caller's.
func leastLoaded(w io.Writer, r result) {
	get := func(scenario, balancer, unit string) float64 { return median(r[scenario+"/"+balancer+"/"+unit]) }
	fmt.Fprintf(w, "\nLeast-loaded vs p2c: 3 in-process instances of %.0f calls/s capacity each, load reports every 1s in a real Consul;\n",
		median(r["capacity_per_instance"]))
	fmt.Fprintf(w, "the client sends %.0f calls/s (open loop) to all three; hammered: another caller sends %.0f calls/s straight to the first;\n",
		median(r["client_rate"]), median(r["hammer_rate"]))
	fmt.Fprintf(w, "figures over 4s after 2s of warm-up, the median of %d runs; latency from when each call was due\n", len(r["client_rate"]))
	fmt.Fprintf(w, "%-9s %-13s %7s %8s %8s %8s %8s %9s %12s %12s\n", "scenario", "balancer", "first%", "p50ms", "p99ms", "p99.9ms", "maxms", "failures", "other p99ms", "other p99.9")
	for _, scenario := range []string{"hammered", "even"} {
		for _, balancer := range []string{"round-robin", "p2c", "least-loaded"} {
			other, other999 := "-", "-"
			if scenario == "hammered" {
				other = fmt.Sprintf("%.2f", get(scenario, balancer, "hammer_p99_ms"))
				other999 = fmt.Sprintf("%.2f", get(scenario, balancer, "hammer_p999_ms"))
			}
			fmt.Fprintf(w, "%-9s %-13s %7.1f %8.2f %8.2f %8.2f %8.1f %9.0f %12s %12s\n", scenario, balancer,
				100*get(scenario, balancer, "first_share"), get(scenario, balancer, "p50_ms"), get(scenario, balancer, "p99_ms"),
				get(scenario, balancer, "p999_ms"), get(scenario, balancer, "max_ms"), get(scenario, balancer, "failures"), other, other999)
		}
	}
	fmt.Fprintln(w, "first%: the first instance's share of the client's attempts; other: the other caller's latency")
}

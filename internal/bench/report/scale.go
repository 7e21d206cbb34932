package main

import (
	"fmt"
	"io"
)

// scaleRows are BenchmarkScale's ways of building 100 callers.
var scaleRows = []string{"trimkit", "trimkit-subset", "trimkit-before", "go-kit"}

// scale prints BenchmarkScale: a service of 1,000 instances, 100 callers
// in one process.
func scale(w io.Writer, r result) {
	get := func(unit string) float64 { return median(r[unit]) }
	fmt.Fprintln(w, "\nScale: 1,000 instances in a real Consul agent, 100 callers in one process; per change (an instance joining or leaving)")
	fmt.Fprintf(w, "%-15s %11s %11s %9s %10s %8s %10s %9s %9s\n", "callers", "cpu ms/chg", "per caller", "allocs/c", "heap MiB/c", "conns/c", "conns/inst", "prop p50", "prop max")
	for _, row := range scaleRows {
		if _, ok := r[row+"_cpu_ms/change"]; !ok {
			continue
		}
		prop := func(unit string) string {
			if v, ok := r[row+unit]; ok {
				return fmt.Sprintf("%.0fms", median(v))
			}
			return "-"
		}
		fmt.Fprintf(w, "%-15s %11.1f %11.2f %9.0f %10.2f %8.0f %10.1f %9s %9s\n", row,
			get(row+"_cpu_ms/change"), get(row+"_cpu_ms/change/caller"), get(row+"_allocs/change/caller"), get(row+"_heap_MiB/caller"),
			get(row+"_conns/caller"), get(row+"_conns/instance"), prop("_prop_p50_ms"), prop("_prop_max_ms"))
	}
	fmt.Fprintln(w, "per change: CPU of the process (a quiet spell's subtracted) and allocations, over the 100 callers; heap and connections per caller")
	fmt.Fprintln(w, "trimkit: client.New, one shared watch, answers decoded cheaply; -subset: Subset 20, callers numbered 1..100;")
	fmt.Fprintln(w, "trimkit-before: a watch per caller decoding consul/api's structs (client.New before); go-kit: its sd/consul Instancer and Endpointer per caller")
	fmt.Fprintf(w, "Subset 20 under open-loop load: calls per instance max/mean %.3f, TCP connections per instance mean %.2f max %.0f, steady p99.9 %.1fms, %.0f failed\n",
		get("trimkit-subset_calls_max/mean"), get("trimkit-subset_tcp_conns/instance_mean"), get("trimkit-subset_tcp_conns/instance_max"),
		get("trimkit-subset_steady_p99.9_ms"), get("trimkit-subset_steady_failed"))
	fmt.Fprintf(w, "10%% of the instances killed and 10%% joining, over 4s, under the same load: %.0f calls, %.0f failed, p99.9 %.1fms, max %.1fms\n",
		get("trimkit-subset_churn_calls"), get("trimkit-subset_churn_failed"), get("trimkit-subset_churn_p99.9_ms"), get("trimkit-subset_churn_max_ms"))
	fmt.Fprintln(w, "Targets:")
	before := get("trimkit-before_cpu_ms/change/caller")
	after := get("trimkit_cpu_ms/change/caller")
	printTarget(w, after <= 5 && after <= before/10, "CPU per change per caller: %.2f ms, before %.1f ms: %.0fx less (<= 5 ms, a tenth)", after, before, before/after)
	printTarget(w, get("trimkit-subset_calls_max/mean") <= 1.15, "Subset 20, 100 callers: calls per instance max/mean %.3f (<= 1.15)", get("trimkit-subset_calls_max/mean"))
	printTarget(w, get("trimkit-subset_churn_failed") == 0 && get("trimkit-subset_steady_failed") == 0, "Subset 20: failed calls, steady and while 10%% die and 10%% join: %.0f (0)", get("trimkit-subset_churn_failed")+get("trimkit-subset_steady_failed"))
}

// consulReads prints BenchmarkConsulRead: what Consul spends per change
// for 100 watchers of a 1,000-instance service, by read mode.
func consulReads(w io.Writer, r result) {
	get := func(unit string) float64 { return median(r[unit]) }
	fmt.Fprintln(w, "\nConsul reads: 100 watchers of 1,000 instances through one client agent, CPU per change (ms) and propagation")
	fmt.Fprintf(w, "%-10s %9s %8s %10s %8s %9s %9s\n", "mode", "servers", "leader", "followers", "agent", "prop p50", "prop max")
	for _, mode := range []string{"leader", "stale", "cache", "rpcleader", "rpcstale"} {
		if _, ok := r[mode+"_agent_cpu_ms"]; !ok {
			continue
		}
		fmt.Fprintf(w, "%-10s %9.0f %8.0f %10.0f %8.0f %8.0fms %8.0fms\n", mode,
			get(mode+"_servers_cpu_ms"), get(mode+"_leader_cpu_ms"), get(mode+"_followers_cpu_ms"), get(mode+"_agent_cpu_ms"),
			get(mode+"_prop_p50_ms"), get(mode+"_prop_max_ms"))
	}
	fmt.Fprintf(w, "rpc*: an agent with use_streaming_backend = false; the others read through a default agent (streaming). Answer %.0f kB, %.0f kB gzipped\n",
		get("answer_kB"), get("answer_gzip_kB"))
}

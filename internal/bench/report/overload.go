package main

import (
	"fmt"
	"io"
)

var (
	overloadRows  = []string{"no-limiter", "limiter", "limiter+load+throttle", "gokit-stock"}
	overloadLoads = []string{"0.5x", "1x", "2x", "4x"}
)

// overload prints the Overload section of BenchmarkOverload and the
// verdict on each goal.
func overload(w io.Writer, r result) {
	get := func(row, load, unit string) float64 { return median(r[row+"/"+load+"/"+unit]) }
	fmt.Fprintf(w, "\nOverload: 3 in-process servers, each serving %.0f calls at once of %.0fms (capacity %.0f calls/s, measured);\n",
		median(r["slots"]), median(r["service_ms"]), median(r["capacity_per_s"]))
	fmt.Fprintln(w, "open loop at 0.5x-4x capacity; figures over the 4s after 3s of warm-up; latency of successful calls, from when each was due;")
	fmt.Fprintln(w, "wasted: calls the servers ran for callers who had gone, of all they ran; spread: max/mean calls served per instance")
	fmt.Fprintln(w, "rows: servers without a concurrency limit, p2c; the adaptive limit, p2c, no load in answers, no throttling; all defaults;")
	fmt.Fprintln(w, "go-kit's RoundRobin and lb.Retry(3, 500ms) against the limited servers")
	fmt.Fprintf(w, "%-22s %5s %9s %8s %8s %8s %8s %9s %9s %8s %7s\n", "row", "load", "goodput/s", "of cap", "p50ms", "p99ms", "maxms", "failures", "att/call", "wasted", "spread")
	for _, row := range overloadRows {
		for _, load := range overloadLoads {
			fmt.Fprintf(w, "%-22s %5s %9.0f %7.0f%% %8.1f %8.1f %8.0f %9.0f %9.2f %7.1f%% %7.2f\n", row, load,
				get(row, load, "goodput_per_s"), 100*get(row, load, "goodput_share"),
				get(row, load, "p50_ms"), get(row, load, "p99_ms"), get(row, load, "max_ms"),
				get(row, load, "failures"), get(row, load, "attempts_call"),
				100*get(row, load, "wasted_share"), get(row, load, "spread_max_avg"))
		}
	}
	fmt.Fprintf(w, "\nOne instance of half the capacity (capacity %.0f calls/s): its share of the calls\n", median(r["unequal_capacity_per_s"]))
	fmt.Fprintf(w, "%-22s %5s %9s %8s %8s %12s %14s\n", "row", "load", "goodput/s", "of cap", "p99ms", "small share", "its capacity")
	for _, row := range []string{"limiter", "limiter+load+throttle", "+utilization"} {
		for _, load := range overloadLoads {
			u := "unequal/" + row
			fmt.Fprintf(w, "%-22s %5s %9.0f %7.0f%% %8.1f %11.1f%% %13.1f%%\n", row, load,
				get(u, load, "goodput_per_s"), 100*get(u, load, "goodput_share"), get(u, load, "p99_ms"),
				100*get(u, load, "last_share"), 100*get(u, load, "last_capacity_share"))
		}
	}
	fmt.Fprintln(w, "(below capacity no instance queues and no limit is learned: by calls in flight over the limit the small one looks like")
	fmt.Fprintln(w, "the others; with its own utilization in its answers, Limits.Utilization, it does not)")
	fmt.Fprintln(w, "\nTargets:")
	target := func(format string, ok bool, args ...any) { printTarget(w, ok, format, args...) }
	const full = "limiter+load+throttle"
	base := get(full, "0.5x", "p99_ms")
	for _, load := range []string{"2x", "4x"} {
		share := get(full, load, "goodput_share")
		target("%s at %s: goodput %.0f%% of capacity (>= 90%%)", share >= 0.9, full, load, 100*share)
		p99 := get(full, load, "p99_ms")
		target("%s at %s: p99 %.1fms, %.1fx its 0.5x p99 of %.1fms (<= 3x)", p99 <= 3*base, full, load, p99, p99/base, base)
	}
	worst := 0.0
	for _, load := range overloadLoads {
		worst = max(worst, get(full, load, "spread_max_avg"))
	}
	target("%s: equal instances, max/mean calls %.2f at worst over every load (<= 1.2)", worst <= 1.2, full, worst)
	for _, row := range []string{full, "+utilization"} {
		for _, load := range overloadLoads {
			if row == full && load == "0.5x" {
				continue // see above
			}
			s, c := get("unequal/"+row, load, "last_share"), get("unequal/"+row, load, "last_capacity_share")
			target("%s, half-capacity instance at %s: %.1f%% of the calls for %.1f%% of the capacity (within 10%%)", s >= 0.9*c && s <= 1.1*c, row, load, 100*s, 100*c)
		}
	}
}

var sharesRates = []string{"250", "1000", "2000", "4000"}

// shares prints BenchmarkShares: how p2c spreads calls over three equal,
// real trimsvc processes, by latency alone and with the load in answers.
func shares(w io.Writer, r result) {
	get := func(row, rate, unit string) float64 { return median(r[row+"/"+rate+"/"+unit]) }
	fmt.Fprintln(w, "\nEqual instances (3 real trimsvc processes), p2c: each one's share of the attempts; max/mean")
	fmt.Fprintf(w, "%-14s %7s %8s %8s %8s %9s\n", "cost", "calls/s", "first", "second", "third", "max/mean")
	worst := 0.0
	for _, row := range []string{"latency-only", "load"} {
		for _, rate := range sharesRates {
			fmt.Fprintf(w, "%-14s %7s %7.1f%% %7.1f%% %7.1f%% %9.2f\n", row, rate,
				100*get(row, rate, "share0"), 100*get(row, rate, "share1"), 100*get(row, rate, "share2"), get(row, rate, "max_mean"))
			if row == "load" {
				worst = max(worst, get(row, rate, "max_mean"))
			}
		}
	}
	fmt.Fprintln(w, "Target:")
	printTarget(w, worst <= 1.2, "p2c with the load in answers: max/mean %.2f at worst over every rate (<= 1.2)", worst)
}

package main

import (
	"fmt"
	"io"
)

var streamRows = []string{"raw-rr", "conn-rr", "conn-p2c"}

// streams prints BenchmarkStreams: how fast streams open through each
// row, how evenly 300 long-lived ones spread over 3 instances, and the
// share a slow instance holds.
func streams(w io.Writer, r result) {
	get := func(key string) float64 { return median(r[key]) }
	fmt.Fprintf(w, "\nStreams: grpc-go's interop StreamingOutputCall on 3 in-process instances in a Consul dev agent\n")
	fmt.Fprintf(w, "opens/s: open, first message, close (seq; par from 8 goroutines), rows interleaved;\n")
	fmt.Fprintf(w, "even: %.0f long-lived streams opened at once, the most on one instance over the mean (median of 5, worst);\n", get("streams_open"))
	fmt.Fprintf(w, "slow-unary: one instance answers unary calls %.0fms late, 200 unary calls/s on the same ClientConn: its share of the streams (of the unary calls);\n", get("slow_by_ms"))
	fmt.Fprintf(w, "slow-unary 1by1: the same with the streams opened one after another;\n")
	fmt.Fprintf(w, "slow-first: it sends each stream's first message %.0fms late, no unary calls: its share of the streams (a third is an even spread)\n", get("slow_by_ms"))
	fmt.Fprintf(w, "%-9s %11s %11s %16s %20s %20s %11s\n", "row", "seq opens/s", "par opens/s", "even max/mean", "slow-unary share", "slow-unary 1by1", "slow-first")
	for _, row := range streamRows {
		fmt.Fprintf(w, "%-9s %11.0f %11.0f %16s %20s %20s %10.1f%%\n", row,
			get("seq/"+row+"-opens/s"), get("par/"+row+"-opens/s"),
			fmt.Sprintf("%.2f (%.2f)", get("even/"+row+"-max/mean"), get("even/"+row+"-worst_max/mean")),
			fmt.Sprintf("%.1f%% (%.1f%%)", 100*get("slow-unary/"+row+"-share"), 100*get("slow-unary/"+row+"-unary_share")),
			fmt.Sprintf("%.1f%% (%.1f%%)", 100*get("slow-unary-1by1/"+row+"-share"), 100*get("slow-unary-1by1/"+row+"-unary_share")),
			100*get("slow-first/"+row+"-share"))
	}
	fmt.Fprintln(w, "Targets:")
	for _, row := range []string{"conn-rr", "conn-p2c"} {
		v := get("even/" + row + "-worst_max/mean")
		printTarget(w, v <= 1.15, "even: %s streams on the busiest instance over the mean, worst of 5: %.2f <= 1.15", row, v)
	}
}

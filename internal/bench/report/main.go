// Command report reads the output of trimkit's benchmarks (go test -bench)
// and prints the summary table of `make bench`: each call-overhead row with
// its ratio to raw-3conn, then the discovery, failover and scale figures.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "report: %v\n", err)
		os.Exit(1)
	}
}

// result is every run of one benchmark: its metrics by unit, one value per run.
type result map[string][]float64

func run(files []string, w io.Writer) error {
	results := map[string]result{}
	var order []string
	for _, f := range files {
		if err := parse(f, results, &order); err != nil {
			return err
		}
	}
	if len(results) == 0 {
		return fmt.Errorf("no benchmark results in %v", files)
	}
	overhead(w, results)
	if r, ok := results["BenchmarkOverheadPaired"]; ok {
		paired(w, r)
	}
	if r, ok := results["BenchmarkRetryCost"]; ok {
		fmt.Fprintf(w, "Retry's share, on one ClientConn turned on and off in alternating blocks: on %.3fx off [%.3f, %.3f] (median of %d runs); %.1f against %.1f us a call\n",
			median(r["on/off"]), median(r["on/off-lo"]), median(r["on/off-hi"]), len(r["on/off"]), median(r["on-ns/call"])/1000, median(r["off-ns/call"])/1000)
	}
	if r, ok := results["BenchmarkServerThroughput"]; ok {
		serverThroughput(w, r)
	}
	once(w, results, order)
	if r, ok := results["BenchmarkLeastLoaded"]; ok {
		leastLoaded(w, r)
	}
	if r, ok := results["BenchmarkGrayFailure"]; ok {
		gray(w, r)
	}
	if r, ok := results["BenchmarkOverload"]; ok {
		overload(w, r)
	}
	if r, ok := results["BenchmarkShares"]; ok {
		shares(w, r)
	}
	if r, ok := results["BenchmarkScale"]; ok {
		scale(w, r)
	}
	if r, ok := results["BenchmarkConsulRead"]; ok {
		consulReads(w, r)
	}
	if r, ok := results["BenchmarkStreams"]; ok {
		streams(w, r)
	}
	datacenters(w, results)
	return nil
}

// pairedTargets are the rows of BenchmarkOverheadPaired, each with its
// floor and either its target (time per call over the floor's) or, for a
// row that attributes a cost, what it measures.
var pairedTargets = []struct {
	row, floor string
	target     float64 // 0: none, note says what the row measures
	note       string
}{
	{"raw-3conn-again", "raw-3conn", 0, "the noise floor: the same stack twice"},
	{"raw-3conn-header", "raw-3conn", 0, "reading the trimsvc-instance header, as the trim binding does"},
	{"trimkit-fixed", "raw-3conn", 1.05, ""},
	{"trimkit-fixed", "raw-3conn-header", 0, "trimkit-fixed against a floor that reads the header too"},
	{"generic-orders", "raw-3conn-orders", 1.03, ""},
	{"trimkit-mtls", "raw-3conn-mtls", 1.05, ""},
	{"trimkit-conn", "raw-1conn-rr", 1.02, ""},
}

// paired prints BenchmarkOverheadPaired's ratios: the median of the
// pairs' and its 95% interval, against each row's target.
func paired(w io.Writer, r result) {
	fmt.Fprintln(w, "paired blocks (each row against its floor in alternating blocks of 100 calls; median of the pairs' ratios [95% interval]):")
	for _, mode := range []string{"seq", "par"} {
		for _, t := range pairedTargets {
			name := mode + "/" + t.row + "/" + t.floor
			mid := median(r[name+"-ratio"])
			if mid == 0 {
				continue
			}
			lo, hi := median(r[name+"-ratio-lo"]), median(r[name+"-ratio-hi"])
			if t.target == 0 {
				fmt.Fprintf(w, "  %s: %s/%s %.3fx [%.3f, %.3f] (%s)\n", mode, t.row, t.floor, mid, lo, hi, t.note)
				continue
			}
			printTarget(w, mid <= t.target, "%s: %s/%s %.3fx [%.3f, %.3f] <= %.2fx", mode, t.row, t.floor, mid, lo, hi, t.target)
		}
	}
}

// parse reads benchmark lines: name, iterations, then value/unit pairs.
func parse(path string, results map[string]result, order *[]string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || !strings.HasPrefix(fields[0], "Benchmark") {
			continue
		}
		name := fields[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			name = name[:i] // the GOMAXPROCS suffix
		}
		r, ok := results[name]
		if !ok {
			r = result{}
			results[name] = r
			*order = append(*order, name)
		}
		for i := 2; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				continue
			}
			r[fields[i+1]] = append(r[fields[i+1]], v)
		}
	}
	return sc.Err()
}

func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(vs))
	return s[len(s)/2]
}

var rows = []string{"raw-1conn", "raw-3conn", "raw-3conn-again", "raw-3conn-deadline", "raw-3conn-header", "gokit-stock", "trimkit-fixed", "trimkit-traced", "trimkit-consul", "raw-3conn-mtls", "trimkit-mtls", "raw-3conn-orders", "generic-orders", "raw-1conn-rr", "trimkit-conn"}

// overhead prints the call-overhead table. Times come from
// BenchmarkOverheadInterleaved when present (robust to drift), else from
// BenchmarkOverhead; allocations from BenchmarkOverhead.
func overhead(w io.Writer, results map[string]result) {
	inter := results["BenchmarkOverheadInterleaved"]
	nsOf := func(mode, row string) float64 {
		if v, ok := inter[mode+"/"+row+"-ns/op"]; ok {
			return median(v)
		}
		return median(results["BenchmarkOverhead/"+mode+"/"+row]["ns/op"])
	}
	fmt.Fprintln(w, "Call overhead, one TrimSpace call over 3 in-process servers on loopback (median of runs)")
	fmt.Fprintf(w, "%-5s %-19s %10s %8s %9s %10s %8s\n", "mode", "row", "ns/op", "ratio", "thruput", "allocs/op", "+allocs")
	for _, mode := range []string{"seq", "par"} {
		baseNS := nsOf(mode, "raw-3conn")
		baseAllocs := median(results["BenchmarkOverhead/"+mode+"/raw-3conn"]["allocs/op"])
		for _, row := range rows {
			ns := nsOf(mode, row)
			if ns == 0 {
				continue
			}
			ratio, thru := "-", "-"
			if baseNS > 0 {
				ratio = fmt.Sprintf("%.2fx", ns/baseNS)
				thru = fmt.Sprintf("%.2fx", baseNS/ns)
			}
			allocs := median(results["BenchmarkOverhead/"+mode+"/"+row]["allocs/op"])
			fmt.Fprintf(w, "%-5s %-19s %10.0f %8s %9s %10.0f %+8.0f\n", mode, row, ns, ratio, thru, allocs, allocs-baseAllocs)
		}
	}
	fmt.Fprintln(w, "ratio: time per call against raw-3conn (lower is better); thruput: calls/s against raw-3conn (higher is better)")
	for _, mode := range []string{"seq", "par"} {
		if again, raw := nsOf(mode, "raw-3conn-again"), nsOf(mode, "raw-3conn"); again > 0 && raw > 0 {
			fmt.Fprintf(w, "noise floor, %s: raw-3conn-again, the same stack on connections of its own, %.3fx raw-3conn\n", mode, again/raw)
		}
	}
	for _, mode := range []string{"seq", "par"} {
		if traced, fixed := nsOf(mode, "trimkit-traced"), nsOf(mode, "trimkit-fixed"); traced > 0 && fixed > 0 {
			fmt.Fprintf(w, "tracing on, %s: trimkit-traced %.3fx trimkit-fixed's time per call (off: no spans, one nil check)\n", mode, traced/fixed)
		}
	}
	if r, ok := results["BenchmarkCallPath"]; ok {
		fmt.Fprintf(w, "trimkit's own work per call, no network (CallPath: Retry, RoundRobin, Endpointer, an endpoint that returns at once): %.0f ns, %.0f allocs\n",
			median(r["ns/op"]), median(r["allocs/op"]))
	}
	for _, mode := range []string{"seq", "par"} {
		if tls, plain := nsOf(mode, "trimkit-mtls"), nsOf(mode, "trimkit-fixed"); tls > 0 && plain > 0 {
			fmt.Fprintf(w, "mutual TLS, %s: trimkit %.2fx its plaintext time per call, raw gRPC %.2fx\n", mode, tls/plain, nsOf(mode, "raw-3conn-mtls")/nsOf(mode, "raw-3conn"))
		}
		if generic, raw := nsOf(mode, "generic-orders"), nsOf(mode, "raw-3conn-orders"); generic > 0 && raw > 0 {
			fmt.Fprintf(w, "generic stack over examples/orders (not trim), %s: %.2fx raw gRPC's time per call; trimkit-fixed over trim: %.2fx\n", mode, generic/raw, nsOf(mode, "trimkit-fixed")/nsOf(mode, "raw-3conn"))
		}
	}
	// The native face against its own floor, one ClientConn with grpc-go's
	// round_robin: the same generated client, the same connections.
	native := false
	for _, mode := range []string{"seq", "par"} {
		conn, raw := nsOf(mode, "trimkit-conn"), nsOf(mode, "raw-1conn-rr")
		if conn == 0 || raw == 0 {
			continue
		}
		if !native {
			fmt.Fprintln(w, "native face (client.NewConn) against one ClientConn with grpc-go's round_robin:")
			native = true
		}
		printTarget(w, conn <= 1.02*raw, "%s: trimkit-conn %.3fx raw-1conn-rr's time per call <= 1.02x", mode, conn/raw)
		if c, r := median(inter[mode+"/trimkit-conn-cpu-ns/op"]), median(inter[mode+"/raw-1conn-rr-cpu-ns/op"]); c > 0 && r > 0 {
			fmt.Fprintf(w, "  %s: and %.3fx its CPU time per call (the process's, servers included: steadier than the wall clock)\n", mode, c/r)
		}
		// Allocations come from the -benchmem run (BenchmarkOverhead), if
		// it is among the files read.
		connAllocs := median(results["BenchmarkOverhead/"+mode+"/trimkit-conn"]["allocs/op"])
		rawAllocs := median(results["BenchmarkOverhead/"+mode+"/raw-1conn-rr"]["allocs/op"])
		if connAllocs > 0 && rawAllocs > 0 {
			printTarget(w, connAllocs-rawAllocs <= 5, "%s: trimkit-conn %+.0f allocations per call against raw-1conn-rr <= +5", mode, connAllocs-rawAllocs)
		}
	}
}

// once prints the single-run benchmarks' custom metrics.
func once(w io.Writer, results map[string]result, order []string) {
	for _, name := range order {
		if strings.HasPrefix(name, "BenchmarkOverhead") || name == "BenchmarkGrayFailure" || name == "BenchmarkLeastLoaded" || name == "BenchmarkOverload" || name == "BenchmarkShares" ||
			name == "BenchmarkScale" || name == "BenchmarkConsulRead" || name == "BenchmarkStreams" || name == "BenchmarkServerThroughput" || name == "BenchmarkCallPath" || name == "BenchmarkRetryCost" ||
			strings.HasPrefix(name, "BenchmarkDatacenterFailover") { // tables of their own
			continue
		}
		r := results[name]
		units := make([]string, 0, len(r))
		for u := range r {
			if u != "ns/op" && u != "B/op" && u != "allocs/op" {
				units = append(units, u)
			}
		}
		slices.Sort(units)
		fmt.Fprintf(w, "\n%s\n", strings.TrimPrefix(name, "Benchmark"))
		for _, u := range units {
			fmt.Fprintf(w, "  %-22s %10.2f\n", u, median(r[u]))
		}
	}
}

// serverThroughput prints the server-side row: trimsvc with its default
// Limits against a bare grpc-go server of the same proto, under ghz.
func serverThroughput(w io.Writer, r result) {
	fmt.Fprintf(w, "\nServer throughput under ghz (-c 8, 2 connections, 40,000 calls a run, interleaved rounds)\n")
	fmt.Fprintf(w, "  trimsvc %.0f calls/s, bare grpc-go %.0f calls/s; each round:", median(r["trimsvc-calls/s"]), median(r["bare-calls/s"]))
	for i := 1; ; i++ {
		v, ok := r[fmt.Sprintf("round%d-trimsvc/bare", i)]
		if !ok {
			break
		}
		fmt.Fprintf(w, " %.2fx", median(v))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  server CPU per call: trimsvc %.1f us, bare %.1f us (%.2fx); all rounds together %.2fx\n",
		median(r["trimsvc-cpu-us/call"]), median(r["bare-cpu-us/call"]), median(r["trimsvc-cpu-us/call"])/median(r["bare-cpu-us/call"]), median(r["trimsvc/bare"]))
	ratio := median(r["median-trimsvc/bare"])
	printTarget(w, ratio >= 0.95, "trimsvc with default Limits %.2fx a bare grpc-go server's calls/s (median round) >= 0.95x", ratio)
}

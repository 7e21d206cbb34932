package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReport(t *testing.T) {
	out := `goos: linux
BenchmarkOverhead/seq/raw-3conn-2     	   100	    100000 ns/op	   10000 B/op	     160 allocs/op
BenchmarkOverhead/seq/raw-3conn-2     	   100	    120000 ns/op	   10000 B/op	     160 allocs/op
BenchmarkOverhead/seq/raw-3conn-2     	   100	    110000 ns/op	   10000 B/op	     160 allocs/op
BenchmarkOverhead/seq/trimkit-fixed-2 	   100	    115500 ns/op	   11000 B/op	     180 allocs/op
BenchmarkOverhead/seq/raw-3conn-again-2 	   100	    112200 ns/op	   10000 B/op	     160 allocs/op
BenchmarkOverhead/seq/trimkit-traced-2 	   100	    127050 ns/op	   13000 B/op	     230 allocs/op
BenchmarkOverhead/seq/raw-1conn-rr-2  	   100	    100000 ns/op	   10000 B/op	     166 allocs/op
BenchmarkCallPath-2   	 1000000	       830.0 ns/op	     144 B/op	       1 allocs/op
BenchmarkCallPath-2   	 1000000	       850.0 ns/op	     144 B/op	       1 allocs/op
BenchmarkCallPath-2   	 1000000	       810.0 ns/op	     144 B/op	       1 allocs/op
BenchmarkOverhead/seq/trimkit-conn-2  	   100	    110000 ns/op	   11000 B/op	     179 allocs/op
BenchmarkOverheadInterleaved-2 	       1	1 ns/op	    100000 seq/raw-1conn-rr-ns/op	    110000 seq/trimkit-conn-ns/op	    100000 seq/raw-1conn-rr-cpu-ns/op	    103000 seq/trimkit-conn-cpu-ns/op
BenchmarkOverheadPaired-2 	       1	1 ns/op	1.061 seq/trimkit-fixed/raw-3conn-ratio	1.048 seq/trimkit-fixed/raw-3conn-ratio-lo	1.075 seq/trimkit-fixed/raw-3conn-ratio-hi	0.998 seq/raw-3conn-again/raw-3conn-ratio	0.99 seq/raw-3conn-again/raw-3conn-ratio-lo	1.01 seq/raw-3conn-again/raw-3conn-ratio-hi	1.04 seq/trimkit-fixed/raw-3conn-header-ratio	1.02 seq/trimkit-fixed/raw-3conn-header-ratio-lo	1.06 seq/trimkit-fixed/raw-3conn-header-ratio-hi
BenchmarkRetryCost-2   	       1	5003445810 ns/op	     61082 off-ns/call	     62822 on-ns/call	         1.034 on/off	         1.061 on/off-hi	         1.002 on/off-lo
BenchmarkServerThroughput-2   	       1	58813356193 ns/op	      4844 bare-calls/s	         0.8413 round1-trimsvc/bare	         0.8543 round2-trimsvc/bare	         0.9290 round3-trimsvc/bare	      4225 trimsvc-calls/s	         0.8723 trimsvc/bare	0.8543 median-trimsvc/bare	110.5 trimsvc-cpu-us/call	92.0 bare-cpu-us/call
BenchmarkDiscovery-2   	       1	8106760760 ns/op	        10.64 join_max_ms	         4.107 join_p50_ms
BenchmarkStreams-2     	       1	1 ns/op	       1.02 even/conn-p2c-max/mean	1.06 even/conn-p2c-worst_max/mean	3000 seq/conn-p2c-opens/s	0.16 slow-unary/conn-p2c-share
BenchmarkLeastLoaded-2 	       1	1 ns/op	      1781 capacity_per_instance	0.3333 hammered/round-robin/first_share	25.04 hammered/round-robin/p99_ms	0.09865 hammered/least-loaded/first_share	25.76 hammered/round-robin/hammer_p99_ms
`
	path := filepath.Join(t.TempDir(), "bench.txt")
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	var w bytes.Buffer
	if err := run([]string{path}, &w); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"seq   raw-3conn               110000    1.00x     1.00x        160       +0", // the median of three runs
		"seq   trimkit-fixed           115500    1.05x     0.95x        180      +20",
		"seq: trimkit-conn 1.100x raw-1conn-rr's time per call <= 1.02x",
		"seq: and 1.030x its CPU time per call",
		"tracing on, seq: trimkit-traced 1.100x trimkit-fixed's time per call",
		"noise floor, seq: raw-3conn-again, the same stack on connections of its own, 1.020x raw-3conn",
		"no network (CallPath: Retry, RoundRobin, Endpointer, an endpoint that returns at once): 830 ns, 1 allocs",
		"seq: trimkit-conn +13 allocations per call against raw-1conn-rr <= +5",
		"seq: trimkit-fixed/raw-3conn 1.061x [1.048, 1.075] <= 1.05x",
		"seq: raw-3conn-again/raw-3conn 0.998x [0.990, 1.010] (the noise floor: the same stack twice)",
		"seq: trimkit-fixed/raw-3conn-header 1.040x [1.020, 1.060] (trimkit-fixed against a floor that reads the header too)",
		"Retry's share, on one ClientConn turned on and off in alternating blocks: on 1.034x off [1.002, 1.061] (median of 1 runs); 62.8 against 61.1 us a call",
		"join_p50_ms                  4.11",
		"trimsvc 4225 calls/s, bare grpc-go 4844 calls/s; each round: 0.84x 0.85x 0.93x",
		"server CPU per call: trimsvc 110.5 us, bare 92.0 us (1.20x); all rounds together 0.87x",
		"trimsvc with default Limits 0.85x a bare grpc-go server's calls/s (median round) >= 0.95x",
		"hammered  round-robin      33.3",
		"hammered  least-loaded      9.9",
		"1781 calls/s capacity",
		"conn-p2c         3000           0      1.02 (1.06)         16.0% (0.0%)          0.0% (0.0%)",
		"even: conn-p2c streams on the busiest instance over the mean, worst of 5: 1.06 <= 1.15",
	} {
		if !strings.Contains(w.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, w.String())
		}
	}
	if strings.Contains(w.String(), "\nRetryCost\n") {
		t.Errorf("RetryCost printed twice, as a line of its own and as a table:\n%s", w.String())
	}
	if err := run([]string{filepath.Join(t.TempDir(), "missing")}, &w); err == nil {
		t.Error("missing file: want error")
	}
}

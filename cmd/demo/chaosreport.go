package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

func (s *soak) printOutcome(i int64, o outcome) {
	fmt.Fprintf(s.w, "[%6.1fs] #%-3d %-17s %-9s %s; healthy after %v; %d calls, %d failed; RSS %s\n",
		o.at.Seconds(), i+1, o.kind, o.target, o.what, o.recovered.Round(100*time.Millisecond), o.calls, o.failed, mb(o.rss))
	printErrs(s.w, o.errs)
	if o.failStatic > 0 {
		fmt.Fprintf(s.w, "           the catalog dropped most instances at once; the client held up to %d alive on their connections (fail-static)\n", o.held)
	}
	if o.discoveryFailures > 0 {
		fmt.Fprintf(s.w, "           the client's consul queries failed %d times (%d refused its token), the last: %s\n",
			o.discoveryFailures, o.discoveryRefusals, o.discoveryErr)
	}
}

func printErrs(w io.Writer, errs map[string]int) {
	for _, m := range slices.Sorted(maps.Keys(errs)) {
		fmt.Fprintf(w, "           %6d x %s\n", errs[m], m)
	}
}

func (s *soak) summary(took time.Duration) {
	type row struct {
		count     int
		failed    int64
		discovery int64
		static    int64
		longest   time.Duration
	}
	rows := map[faultKind]*row{}
	for _, k := range faultKinds() {
		rows[k] = &row{}
	}
	for _, o := range s.outcomes {
		r := rows[o.kind]
		r.count++
		r.failed += o.failed
		r.discovery += o.discoveryFailures
		r.static += o.failStatic
		r.longest = max(r.longest, o.recovered)
	}
	calls, failed := s.load.calls.Load(), s.load.failed.Load()
	fmt.Fprintf(s.w, "\nchaos summary: %d faults in %v; %d calls, %d failed (%.3f%%)\n",
		len(s.outcomes), took.Round(time.Second), calls, failed, 100*float64(failed)/float64(max(calls, 1)))
	fmt.Fprintf(s.w, "  %-17s %5s %13s %17s %24s %12s\n", "fault", "count", "failed calls", "longest recovery", "failed consul queries", "fail-static")
	var fewer []string
	for _, k := range faultKinds() {
		r := rows[k]
		fmt.Fprintf(s.w, "  %-17s %5d %13d %17v %24d %12d\n", k, r.count, r.failed, r.longest.Round(100*time.Millisecond), r.discovery, r.static)
		if r.count < 2 {
			fewer = append(fewer, string(k))
		}
	}
	if n, _ := s.load.failures(-1); n > 0 {
		fmt.Fprintf(s.w, "  %-17s %5s %13d\n", "(warm-up)", "-", n)
	}
	if len(fewer) > 0 {
		fmt.Fprintf(s.w, "  hit fewer than twice (a longer DURATION hits every kind more): %s\n", strings.Join(fewer, ", "))
	}
	if n, refusals, at, lastErr := s.discovery.state(); n > 0 {
		fmt.Fprintf(s.w, "the client's consul queries failed %d times, %d of them refusing its token; the last, %v before the end: %s\n",
			n, refusals, time.Since(at).Round(time.Second), lastErr)
		if refused(lastErr) {
			fmt.Fprintln(s.w, "WARNING: consul refused the client's token: its calls went on only with the instances it knew, where they were;")
			fmt.Fprintln(s.w, "         the faults after a caller-token rotation did not test its discovery (does it re-read its token file?)")
		}
	}
	fmt.Fprintf(s.w, "RSS of this process (the load's client stack, and the soak's own bookkeeping): start %s, end %s, max %s\n",
		mb(s.rss.first.Load()), mb(s.rss.sample()), mb(s.rss.max.Load()))
	fmt.Fprintf(s.w, "seed %d\n", s.seed)
}

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/trimkit/trimkit/internal/loadgen"
)

func (s *soak) printOutcome(i int64, o outcome) {
	fmt.Fprintf(s.w, "[%6.1fs] #%-3d %-17s %-9s %s; healthy after %v; %d calls, %d failed; RSS %s\n",
		o.at.Seconds(), i+1, o.kind, o.target, o.what, o.recovered.Round(100*time.Millisecond), o.calls, o.failed, mb(o.rss))
	printErrs(s.w, o.errs)
	if first, last, ok := s.load.failedFromTo(i); ok {
		fmt.Fprintf(s.w, "           failures from %.3fs to %.3fs after the load started\n", first, last)
	}
	if o.failStatic > 0 {
		fmt.Fprintf(s.w, "           the catalog dropped most instances within a few seconds; the client held up to %d alive on their connections (fail-static)\n", o.held)
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
	// Every kind of the deck, hit or not, then those of the walkthrough
	// sequence as they came.
	var kinds []faultKind
	if s.cfg.sequence != sequenceWalkthrough {
		kinds = deckKinds(s.cfg.dcs)
	}
	rows := map[faultKind]*row{}
	for _, k := range kinds {
		rows[k] = &row{}
	}
	for _, o := range s.outcomes {
		if rows[o.kind] == nil {
			kinds = append(kinds, o.kind)
			rows[o.kind] = &row{}
		}
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
	width := len("(warm-up)")
	for _, k := range kinds {
		width = max(width, len(k))
	}
	fmt.Fprintf(s.w, "  %-*s %5s %13s %17s %24s %12s\n", width, "fault", "count", "failed calls", "longest recovery", "failed consul queries", "fail-static")
	var fewer []string
	for _, k := range kinds {
		r := rows[k]
		fmt.Fprintf(s.w, "  %-*s %5d %13d %17v %24d %12d\n", width, k, r.count, r.failed, r.longest.Round(100*time.Millisecond), r.discovery, r.static)
		if r.count < 2 {
			fewer = append(fewer, string(k))
		}
	}
	if n, _ := s.load.failures(-1); n > 0 {
		fmt.Fprintf(s.w, "  %-*s %5s %13d\n", width, "(warm-up)", "-", n)
	}
	if len(fewer) > 0 {
		fmt.Fprintf(s.w, "  hit fewer than twice (a longer DURATION hits every kind more): %s\n", strings.Join(fewer, ", "))
	}
	// Where the failures were: seconds since the load started, as the
	// faults' [at] above.
	s.load.failureTimes().Print(s.w)
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

// chaosReport is the soak's report as -json writes it.
type chaosReport struct {
	Seed     uint64  `json:"seed"`
	Sequence string  `json:"sequence"`
	Rate     float64 `json:"rate"`
	Seconds  float64 `json:"seconds"`
	// Datacenters is how many, with several (-dcs 2).
	Datacenters int   `json:"datacenters,omitempty"`
	Calls       int64 `json:"calls"`
	Failures    int64 `json:"failures"`
	loadgen.FailureTimes
	Faults []faultReport `json:"faults"`
}

type faultReport struct {
	At         float64        `json:"at_seconds"`
	Kind       faultKind      `json:"kind"`
	Target     string         `json:"target"`
	What       string         `json:"what"`
	Recovered  float64        `json:"recovered_seconds"`
	Calls      int64          `json:"calls"`
	Failed     int64          `json:"failed"`
	Errors     map[string]int `json:"errors,omitempty"`
	FailStatic int64          `json:"fail_static"`
	Held       int64          `json:"held"`
}

// writeJSON writes the soak's report to path, as JSON.
func (s *soak) writeJSON(path string, took time.Duration) error {
	r := chaosReport{Seed: s.seed, Sequence: s.cfg.sequence, Rate: s.cfg.rate, Seconds: took.Seconds(),
		Calls: s.load.calls.Load(), Failures: s.load.failed.Load(), Faults: []faultReport{}}
	r.FailureTimes = s.load.failureTimes()
	if s.cfg.dcs > 1 {
		r.Datacenters = s.cfg.dcs
	}
	for _, o := range s.outcomes {
		r.Faults = append(r.Faults, faultReport{At: o.at.Seconds(), Kind: o.kind, Target: o.target, What: o.what,
			Recovered: o.recovered.Seconds(), Calls: o.calls, Failed: o.failed, Errors: o.errs, FailStatic: o.failStatic, Held: o.held})
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

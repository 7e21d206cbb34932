package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/log"

	"github.com/trimkit/trimkit/transport/trim"
)

// The chaos report places the failures: each fault's first and last, and
// in the summary the seconds that had failures and the first and last
// failure of the run.
func TestChaosReportPlacesFailures(t *testing.T) {
	var n atomic.Int64
	e := func(context.Context, interface{}) (interface{}, error) {
		if n.Add(1)%4 == 0 {
			return nil, errors.New("boom")
		}
		return trim.TrimResponse{Instance: "a"}, nil
	}
	l := newLoad(e, 200)
	l.window.Store(0)
	l.start(context.Background())
	time.Sleep(300 * time.Millisecond)
	l.Stop()
	failed := l.failed.Load()
	if failed == 0 {
		t.Fatal("no call failed")
	}
	var buf bytes.Buffer
	s := &soak{w: &buf, load: l, discovery: &discoveryWatch{next: log.NewNopLogger()}}
	o := outcome{calls: l.calls.Load()}
	o.failed, o.errs = l.failures(0)
	s.printOutcome(0, o)
	s.summary(time.Second)
	out := buf.String()
	for _, re := range []string{
		`\n           failures from 0\.\d{3}s to 0\.\d{3}s after the load started\n`,
		`\nfailures by second since the start, \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \(seconds without failures not listed\):\n  0s +\d+ of \d+ calls failed\n`,
		`\nfirst failure: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \(0\.\d{3}s after the start\)\n`,
		`\nlast failure:  \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \(0\.\d{3}s after the start\)\n`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("report lacks %s:\n%s", re, out)
		}
	}
	s.outcomes = append(s.outcomes, o)
	path := filepath.Join(t.TempDir(), "report.json")
	if err := s.writeJSON(path, time.Second); err != nil {
		t.Fatal(err)
	}
	var r chaosReport
	if b, err := os.ReadFile(path); err != nil {
		t.Fatal(err)
	} else if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%v:\n%s", err, b)
	}
	if r.Failures != failed || len(r.PerSecond) == 0 || r.FirstFailure == nil || r.LastFailure == nil || len(r.Faults) != 1 || r.Faults[0].Failed != o.failed {
		t.Errorf("JSON report: %+v, want %d failures placed and the one fault", r, failed)
	}
	// The HTML report: four charts over the run, the fault marked on each,
	// and its row.
	s.took = 1500 * time.Millisecond
	s.outcomes[0].kind, s.outcomes[0].target, s.outcomes[0].at = "sigstop", "trimsvc-2", 100*time.Millisecond
	s.rss.points = []rssPoint{{time.Second, 30 << 20}}
	dir := t.TempDir()
	if err := s.writeReport(dir); err != nil {
		t.Fatal(err)
	}
	html, err := os.ReadFile(filepath.Join(dir, "report.html"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(html), "<svg"); n != 4 {
		t.Errorf("%d charts, want calls, failures, p99 and RSS", n)
	}
	if n := strings.Count(string(html), "<title>#1 sigstop trimsvc-2</title>"); n != 4 {
		t.Errorf("the fault is marked on %d charts, want 4", n)
	}
	for _, want := range []string{">offered<", ">failed<", ">p99<", ">RSS<", "<td>sigstop</td><td>trimsvc-2</td>", "calls failed."} {
		if !strings.Contains(string(html), want) {
			t.Errorf("the HTML report lacks %q", want)
		}
	}
	if _, _, _, _, p99 := l.series(); len(p99) == 0 || p99[0] <= 0 {
		t.Errorf("p99 by second: %v", p99)
	}
	ft := l.failureTimes()
	start, seconds, first, last := ft.Start, ft.PerSecond, ft.FirstFailure, ft.LastFailure
	total := 0
	for _, sec := range seconds {
		total += sec.Failures
	}
	if start == "" || int64(total) != failed || first == nil || last == nil || last.Seconds < first.Seconds {
		t.Errorf("per second %v, first %+v, last %+v: want the %d failures", seconds, first, last, failed)
	}

	// Nothing failed: no failure lines.
	l = newLoad(func(context.Context, interface{}) (interface{}, error) {
		return trim.TrimResponse{Instance: "a"}, nil
	}, 200)
	l.start(context.Background())
	time.Sleep(50 * time.Millisecond)
	l.Stop()
	buf.Reset()
	s = &soak{w: &buf, load: l, discovery: &discoveryWatch{next: log.NewNopLogger()}}
	s.summary(time.Second)
	if strings.Contains(buf.String(), "failure") {
		t.Errorf("no failure, but:\n%s", buf.String())
	}
}

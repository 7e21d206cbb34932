package bench

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/internal/svgchart"
	"github.com/trimkit/trimkit/internal/testenv"
)

// latencyCharts collects, for each case of a section (a fault, a load),
// each row's calls over time, and writes two SVGs a case into .bench/:
// SECTION-CASE.svg, the p99 latency of the calls started in each window
// that answered, and SECTION-CASE-failed.svg, the share of them that
// failed; from the warm-up to the end, the fault or the load marked at 0.
type latencyCharts struct {
	section        string
	window         time.Duration
	cases          []string
	p99, failShare map[string][]svgchart.Series
}

func newLatencyCharts(section string, window time.Duration) *latencyCharts {
	return &latencyCharts{section: section, window: window, p99: map[string][]svgchart.Series{}, failShare: map[string][]svgchart.Series{}}
}

// add records row's calls in case, their times taken from zero.
func (c *latencyCharts) add(caseName, row string, calls []loadgen.Call, zero time.Time) {
	if c == nil || len(calls) == 0 {
		return
	}
	if !slices.Contains(c.cases, caseName) {
		c.cases = append(c.cases, caseName)
	}
	type window struct {
		answered []time.Duration
		failed   int
	}
	byWindow := map[int]*window{}
	for _, call := range calls {
		d := call.Start.Sub(zero)
		i := int(d / c.window)
		if d < 0 && d%c.window != 0 {
			i-- // the window below: floor, not truncation
		}
		w := byWindow[i]
		if w == nil {
			w = &window{}
			byWindow[i] = w
		}
		if call.Err != nil {
			w.failed++
		} else {
			w.answered = append(w.answered, call.Took)
		}
	}
	var p99, failed []svgchart.Point
	for _, i := range slices.Sorted(maps.Keys(byWindow)) {
		w := byWindow[i]
		x := (time.Duration(i)*c.window + c.window/2).Seconds()
		if len(w.answered) > 0 {
			slices.Sort(w.answered)
			p99 = append(p99, svgchart.Point{X: x, Y: float64(loadgen.Percentile(w.answered, 99)) / float64(time.Millisecond)})
		}
		failed = append(failed, svgchart.Point{X: x, Y: 100 * float64(w.failed) / float64(w.failed+len(w.answered))})
	}
	c.p99[caseName] = append(c.p99[caseName], svgchart.Series{Name: row, Points: p99})
	c.failShare[caseName] = append(c.failShare[caseName], svgchart.Series{Name: row, Points: failed})
}

// write writes the charts into .bench/ at the top of the module and
// prints where.
func (c *latencyCharts) write(tb testing.TB) {
	c.writeTo(tb, filepath.Join(testenv.ModuleRoot(tb), ".bench"))
}

func (c *latencyCharts) writeTo(tb testing.TB, dir string) {
	if c == nil {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	for _, name := range c.cases {
		for _, chart := range []struct {
			suffix, what, unit string
			series             []svgchart.Series
			ymax               float64
		}{
			{"", "p99 latency of the calls started in each %v that answered", "ms", c.p99[name], 0},
			{"-failed", "calls started in each %v that failed", "%", c.failShare[name], 100},
		} {
			svg := svgchart.Chart{
				Title:  fmt.Sprintf("%s, %s: "+chart.what, c.section, name, c.window),
				YLabel: chart.unit, XLabel: "s", Width: 900, Height: 300, YMax: chart.ymax, Series: chart.series,
				Marks: []svgchart.Mark{{X: 0, Label: name}},
			}
			var b strings.Builder
			if err := svg.Render(&b); err != nil {
				tb.Fatal(err)
			}
			path := filepath.Join(dir, fmt.Sprintf("%s-%s%s.svg", c.section, strings.ReplaceAll(name, "/", "-"), chart.suffix))
			if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
				tb.Fatal(err)
			}
			fmt.Printf("chart: %s\n", path)
		}
	}
}

// A case's two charts: the p99 of the answered calls of each window, and
// the share that failed, each row a line.
func TestLatencyChartsOfACase(t *testing.T) {
	zero := time.Now()
	var calls []loadgen.Call
	for i := range 40 {
		c := loadgen.Call{Start: zero.Add(time.Duration(i-20) * 25 * time.Millisecond), Took: time.Duration(i+1) * time.Millisecond}
		if i >= 30 {
			c.Err = errors.New("boom")
		}
		calls = append(calls, c)
	}
	charts := newLatencyCharts("gray", 100*time.Millisecond)
	charts.add("hung", "rr", calls, zero)
	dir := t.TempDir()
	charts.writeTo(t, dir)
	latency, err := os.ReadFile(filepath.Join(dir, "gray-hung.svg"))
	if err != nil {
		t.Fatal(err)
	}
	failed, err := os.ReadFile(filepath.Join(dir, "gray-hung-failed.svg"))
	if err != nil {
		t.Fatal(err)
	}
	// Ten windows of 4 calls from -0.5s; the last 10 calls failed: the
	// latency line stops after the window of calls 28-31 (2 answered),
	// the failed share is 50% there and 100% after.
	if !strings.Contains(string(latency), ">rr<") || !strings.Contains(string(latency), "that answered") {
		t.Errorf("latency chart: %s", latency)
	}
	if p := charts.p99["hung"][0].Points; len(p) != 8 || p[7].Y != 30 {
		t.Errorf("p99 by window: %v, want 8 windows with answers, the last at 30ms", p)
	}
	if p := charts.failShare["hung"][0].Points; len(p) != 10 || p[7].Y != 50 || p[8].Y != 100 || p[0].Y != 0 {
		t.Errorf("failed share by window: %v", p)
	}
	if !strings.Contains(string(failed), "that failed") {
		t.Errorf("failure chart: %s", failed)
	}
}

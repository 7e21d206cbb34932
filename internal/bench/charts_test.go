package bench

import (
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
// each row's latency over time, and writes one SVG a case into .bench/:
// the p99 (and the failures) of the calls started in each window, from the
// warm-up to the end, the fault or the load marked at 0.
type latencyCharts struct {
	section string
	window  time.Duration
	cases   []string
	series  map[string][]svgchart.Series
}

func newLatencyCharts(section string, window time.Duration) *latencyCharts {
	return &latencyCharts{section: section, window: window, series: map[string][]svgchart.Series{}}
}

// add records row's calls in case, their times taken from zero.
func (c *latencyCharts) add(caseName, row string, calls []loadgen.Call, zero time.Time) {
	if c == nil || len(calls) == 0 {
		return
	}
	if !slices.Contains(c.cases, caseName) {
		c.cases = append(c.cases, caseName)
	}
	byWindow := map[int][]time.Duration{}
	for _, call := range calls {
		d := call.Start.Sub(zero)
		i := int(d / c.window)
		if d < 0 && d%c.window != 0 {
			i-- // the window below: floor, not truncation
		}
		took := call.Took
		if call.Err != nil {
			took = max(took, time.Second) // a failure is as bad as the worst
		}
		byWindow[i] = append(byWindow[i], took)
	}
	var points []svgchart.Point
	for _, i := range slices.Sorted(maps.Keys(byWindow)) {
		ds := byWindow[i]
		slices.Sort(ds)
		points = append(points, svgchart.Point{
			X: (time.Duration(i)*c.window + c.window/2).Seconds(),
			Y: float64(loadgen.Percentile(ds, 99)) / float64(time.Millisecond)})
	}
	c.series[caseName] = append(c.series[caseName], svgchart.Series{Name: row, Points: points})
}

// write writes the charts and prints where.
func (c *latencyCharts) write(tb testing.TB) {
	if c == nil {
		return
	}
	dir := filepath.Join(testenv.ModuleRoot(tb), ".bench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	for _, name := range c.cases {
		chart := svgchart.Chart{
			Title:  fmt.Sprintf("%s, %s: p99 latency of the calls started in each %v (a failed call counts as at least 1s)", c.section, name, c.window),
			YLabel: "ms", XLabel: "s", Width: 900, Height: 300, Series: c.series[name],
			Marks: []svgchart.Mark{{X: 0, Label: name}},
		}
		var b strings.Builder
		if err := chart.Render(&b); err != nil {
			tb.Fatal(err)
		}
		path := filepath.Join(dir, fmt.Sprintf("%s-%s.svg", c.section, strings.ReplaceAll(name, "/", "-")))
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			tb.Fatal(err)
		}
		fmt.Printf("chart: %s\n", path)
	}
}

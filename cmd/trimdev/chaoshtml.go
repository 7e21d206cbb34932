package main

import (
	"errors"
	"fmt"
	"html/template"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/trimkit/trimkit/internal/svgchart"
)

// writeReport writes the HTML report into dir, report.html, and says
// where.
func (s *soak) writeReport(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(dir, "report.html")
	if err := s.writeHTML(path, s.took); err != nil {
		return fmt.Errorf("the HTML report: %w", err)
	}
	fmt.Fprintf(s.w, "chaos: the run as a timeline, each fault marked: %s\n", path)
	return nil
}

// writeHTML writes the soak's report as a page of its own: a timeline of
// the run (calls offered and answered per second, failures per second, the
// p99 latency of each second, the RSS of this process), every fault marked
// and labelled on each chart, and the faults' table.
func (s *soak) writeHTML(path string, took time.Duration) error {
	loadStart, offered, answered, failed, p99 := s.load.series()
	rssStart, rssPoints := s.rss.series()
	// Whole seconds only: the last, cut short by the end, would look like
	// a drop.
	whole := int(took / time.Second)
	perSecond := func(v []float64) []svgchart.Point {
		out := make([]svgchart.Point, 0, len(v))
		for i, y := range v[:min(len(v), whole)] {
			out = append(out, svgchart.Point{X: float64(i) + 0.5, Y: y})
		}
		return out
	}
	var rssMB []svgchart.Point
	for _, p := range rssPoints {
		rssMB = append(rssMB, svgchart.Point{X: (rssStart.Sub(loadStart) + p.at).Seconds(), Y: float64(p.bytes) / (1 << 20)})
	}
	var marks []svgchart.Mark
	for i, o := range s.outcomes {
		marks = append(marks, svgchart.Mark{X: o.at.Seconds(), Label: fmt.Sprintf("#%d", i+1), Note: fmt.Sprintf("#%d %s %s", i+1, o.kind, o.target)})
	}
	end := took.Seconds()
	charts := []svgchart.Chart{
		{Title: "calls", YLabel: "per second", Series: []svgchart.Series{
			{Name: "offered", Color: "#888", Points: perSecond(offered)},
			{Name: "answered", Color: "#1f77b4", Points: perSecond(answered)}}},
		{Title: "failed calls", YLabel: "per second", YMax: max(1, maxOf(failed)), Series: []svgchart.Series{
			{Name: "failed", Color: "#d62728", Points: perSecond(failed)}}},
		{Title: "p99 latency of the calls that ended each second", YLabel: "ms", Series: []svgchart.Series{
			{Name: "p99", Color: "#ff7f0e", Points: perSecond(p99)}}},
		{Title: "RSS of the load's process (the client stack)", YLabel: "MiB", Series: []svgchart.Series{
			{Name: "RSS", Color: "#2ca02c", Points: rssMB}}},
	}
	var svgs []template.HTML
	for _, c := range charts {
		c.Width, c.Height, c.XMin, c.XMax, c.XLabel, c.Marks = 1100, 230, 0, end, "s", marks
		var b strings.Builder
		if err := c.Render(&b); err != nil {
			return err
		}
		svgs = append(svgs, template.HTML(b.String())) // #nosec: svgchart escapes every text it writes
	}
	type row struct {
		N                   int
		At, Recovered       string
		Kind                faultKind
		Target, What        string
		Calls, Failed, Held int64
	}
	var rows []row
	for i, o := range s.outcomes {
		rows = append(rows, row{N: i + 1, At: fmt.Sprintf("%.1fs", o.at.Seconds()), Recovered: o.recovered.Round(100 * time.Millisecond).String(),
			Kind: o.kind, Target: o.target, What: o.what, Calls: o.calls, Failed: o.failed, Held: o.held})
	}
	calls, fails := s.load.calls.Load(), s.load.failed.Load()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = chaosPage.Execute(f, map[string]any{
		"Title":  fmt.Sprintf("chaos soak, seed %d%s: %d faults, %d calls, %d failed", s.seed, datacentersNote(s.cfg.dcs), len(s.outcomes), calls, fails),
		"Replay": replay(s.cfg, s.seed),
		"Charts": svgs, "Faults": rows, "Failed": fails,
	})
	return errors.Join(err, f.Close())
}

// datacentersNote says how many datacenters the soak ran on, when several.
func datacentersNote(dcs int) string {
	if dcs < 2 {
		return ""
	}
	return fmt.Sprintf(", %d datacenters", dcs)
}

func maxOf(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

var chaosPage = template.Must(template.New("chaos").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>body{font:13px/1.4 sans-serif;margin:1em 2em;color:#222} h1{font-size:18px} .bad{color:#c00;font-weight:600}
table{border-collapse:collapse} th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:left} th{background:#f6f6f6}
td.n{text-align:right} svg{display:block;margin:.6em 0}</style></head><body>
<h1>{{.Title}}</h1>
<p>Replay: <code>{{.Replay}}</code>. Seconds since the load started; each dashed line is a fault, labelled with its number in the table below (hover for its kind and target).
{{if .Failed}}<span class="bad">{{.Failed}} calls failed.</span>{{else}}No call failed.{{end}}</p>
{{range .Charts}}{{.}}{{end}}
<table><tr><th>#</th><th>at</th><th>fault</th><th>target</th><th>what happened</th><th>healthy after</th><th>calls</th><th>failed</th><th>held (fail-static)</th></tr>
{{range .Faults}}<tr><td>{{.N}}</td><td>{{.At}}</td><td>{{.Kind}}</td><td>{{.Target}}</td><td>{{.What}}</td><td>{{.Recovered}}</td><td class="n">{{.Calls}}</td><td class="n{{if .Failed}} bad{{end}}">{{.Failed}}</td><td class="n">{{.Held}}</td></tr>
{{end}}</table></body></html>
`))

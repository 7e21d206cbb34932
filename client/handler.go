package client

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/trimkit/trimkit/internal/svgchart"
	"github.com/trimkit/trimkit/internal/watchstate"
)

// Handler serves a live page of what this process's clients see of their
// instances, both faces (New's Clients and NewConn's ClientConns): for
// each client, its service, balancer and Consul watch (last index, last
// error, stale or not), and for each instance its tier (ready, connecting,
// held by fail-static, failing, ejected until its next probe, on
// probation, in the subset or not), its connection's state, its peak-EWMA
// latency, attempts in flight, open streams and last reported load, and a
// chart of its attempts and failures per second over the last three
// minutes. The page is plain HTML with inline SVG and refreshes itself
// every 2 seconds; a request that accepts application/json gets the same
// view as JSON. Mount it where operators look, beside /metrics:
//
//	mux.Handle("/debug/trimkit", client.Handler())
//
// A client joins the page when it is built and leaves it when it is
// closed. The page costs the call path nothing: each client samples its
// instances' counters once a second.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "only GET and HEAD", http.StatusMethodNotAllowed)
			return
		}
		view := views.view(time.Now())
		w.Header().Set("Cache-Control", "no-store")
		if acceptsJSON(r.Header.Values("Accept")) {
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			_ = enc.Encode(view)
			return
		}
		var b bytes.Buffer
		if err := page.Execute(&b, pageData(view)); err != nil {
			http.Error(w, fmt.Sprintf("rendering the page: %v", err), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(b.Bytes())
	})
}

// acceptsJSON says whether an Accept header asks for JSON.
func acceptsJSON(accept []string) bool {
	for _, v := range accept {
		for _, part := range strings.Split(v, ",") {
			if t, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && t == "application/json" {
				return true
			}
		}
	}
	return false
}

// The page's data, as its template shows it.
type (
	pageView struct {
		Time    string
		Clients []clientPage
	}
	clientPage struct {
		clientJSON
		Title string
		Watch *watchPage
		DCs   []dcPage
		Rows  []instancePage
	}
	dcPage struct {
		datacenterJSON
		Watch *watchPage
	}
	watchPage struct {
		Consul, Answered, Error, ErrorSince string
		Index                               uint64
		Stale                               bool
		BehindLeaderMS                      float64
	}
	instancePage struct {
		instanceJSON
		State string // the tier in words
		Chart template.HTML
	}
)

func pageData(v pageJSON) pageView {
	p := pageView{Time: v.Time.Format(time.RFC3339)}
	for _, c := range v.Clients {
		cp := clientPage{clientJSON: c, Title: c.Service}
		if cp.Title == "" {
			cp.Title = "(an Instancer of the program's)"
		}
		cp.Watch = watchOf(v.Time, c.Watch)
		for _, d := range c.Datacenters {
			cp.DCs = append(cp.DCs, dcPage{datacenterJSON: d, Watch: watchOf(v.Time, d.Watch)})
		}
		for _, in := range c.Instances {
			cp.Rows = append(cp.Rows, instancePage{instanceJSON: in, State: tierWords(v.Time, in), Chart: chart(in, c.SecondsCharted)})
		}
		p.Clients = append(p.Clients, cp)
	}
	return p
}

// watchOf is the page's view of a watch's JSON, nil without one.
func watchOf(now time.Time, raw json.RawMessage) *watchPage {
	var w watchstate.State
	if len(raw) == 0 || json.Unmarshal(raw, &w) != nil {
		return nil
	}
	p := &watchPage{Consul: w.Consul, Index: w.LastIndex, Stale: w.Stale, BehindLeaderMS: w.BehindLeaderMS, Error: w.Error, Answered: "never"}
	if w.LastAnswer != nil {
		p.Answered = ago(now, *w.LastAnswer)
	}
	if w.ErrorSince != nil {
		p.ErrorSince = ago(now, *w.ErrorSince)
	}
	return p
}

// tierWords says where an instance stands, as an operator asks it.
func tierWords(now time.Time, in instanceJSON) string {
	var s string
	switch {
	case in.Tier == tierNotInSubset:
		return "not in this caller's subset"
	case in.Ejected && in.NextProbe != nil:
		if d := in.NextProbe.Sub(now); d >= 50*time.Millisecond {
			s = fmt.Sprintf("ejected until its probe in %v", d.Round(100*time.Millisecond))
		} else {
			s = "ejected, being probed"
		}
	case in.Held && in.HeldUntil != nil:
		s = fmt.Sprintf("held by fail-static for %v more", in.HeldUntil.Sub(now).Round(time.Second))
	default:
		s = in.Tier
	}
	if in.Probation {
		s += ", on probation"
	}
	return s
}

func ago(now, t time.Time) string {
	return fmt.Sprintf("%v ago", now.Sub(t).Round(100*time.Millisecond))
}

// chart is an instance's attempts and failures per second as a sparkline,
// the newest second on the right, over the seconds sampled (at least a
// minute, at most seconds).
func chart(in instanceJSON, seconds int) template.HTML {
	span := min(seconds, max(60, len(in.AttemptsPerSecond)))
	points := func(v []float64) []svgchart.Point {
		out := make([]svgchart.Point, len(v))
		for i, y := range v {
			out[i] = svgchart.Point{X: float64(seconds - len(v) + i + 1), Y: y}
		}
		return out
	}
	var b strings.Builder
	_ = svgchart.Sparkline(&b, 180, 28, float64(seconds-span), float64(seconds), 0,
		svgchart.Series{Name: "attempts/s", Color: "#1f77b4", Points: points(in.AttemptsPerSecond)},
		svgchart.Series{Name: "failures/s", Color: "#d62728", Points: points(in.FailuresPerSecond)})
	return template.HTML(b.String()) // #nosec: svgchart escapes every text it writes
}

var page = template.Must(template.New("page").Funcs(template.FuncMap{
	"ms":  func(v float64) string { return fmt.Sprintf("%.2f ms", v) },
	"pct": func(v float64) string { return fmt.Sprintf("%.0f%%", 100*v) },
	"last": func(v []float64) string {
		if len(v) == 0 {
			return "-"
		}
		return fmt.Sprintf("%.0f", v[len(v)-1])
	},
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="2">
<title>trimkit: the clients' view of their instances</title>
<style>
body{font:13px/1.4 sans-serif;margin:1em 2em;color:#222}
h1{font-size:18px} h2{font-size:15px;margin:1.4em 0 .3em} h2 small{font-weight:normal;color:#666}
table{border-collapse:collapse} th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:left;vertical-align:middle}
th{font-weight:600;background:#f6f6f6} td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.ready td.tier{color:#2a7a2a} tr.connecting td.tier{color:#a06000} tr.held td.tier{color:#a06000}
tr.failing td.tier,tr.ejected td.tier{color:#c00;font-weight:600} tr.not_in_subset{color:#999}
.watch{color:#444} .stale{color:#c00;font-weight:600} .legend{color:#666}
</style></head><body>
<h1>What this process's clients see of their instances</h1>
<p class="legend">As of {{.Time}}; the page refreshes every 2 seconds. The same view as JSON: this URL with <code>Accept: application/json</code>.
Charts: attempts per second (blue) and failures per second (red) over the last minute or three, the newest on the right.</p>
{{if not .Clients}}<p>No client in this process yet.</p>{{end}}
{{range .Clients}}
<section class="client" data-service="{{.Service}}">
<h2>{{.Title}} <small>{{.Face}} · balancer {{.Balancer}}{{if .Tags}} · tags {{range .Tags}}{{.}} {{end}}{{end}}{{if .Subset}} · subset of {{.Subset.Size}}: {{.Subset.Members}} of {{.Subset.Listed}} listed{{end}}</small></h2>
{{with .Watch}}<p class="watch{{if .Stale}} stale{{end}}">{{template "watch" .}}</p>{{end}}
{{range .DCs}}<p class="dc" data-dc="{{.Name}}"><b>datacenter {{.Name}}</b>: {{pct .Share}} of first attempts; {{printf "%.1f" .Healthy}} of {{.Instances}} instances healthy (health {{printf "%.2f" .Health}})
{{with .Watch}}<br><span class="watch{{if .Stale}} stale{{end}}">{{template "watch" .}}</span>{{end}}</p>{{end}}
{{$dcs := .DCs}}<table>
<tr>{{if $dcs}}<th>datacenter</th>{{end}}<th>instance</th><th>tier</th><th>connection</th><th>latency (peak EWMA)</th><th>in flight</th><th>streams</th><th>load</th><th>attempts/s, failures/s</th><th>now</th><th>attempts</th><th>failures</th></tr>
{{range .Rows}}<tr class="{{.Tier}}" data-addr="{{.Addr}}" data-tier="{{.Tier}}">
{{if $dcs}}<td>{{.Datacenter}}</td>{{end}}<td>{{.Addr}}</td><td class="tier">{{.State}}</td><td>{{.Conn}}</td><td class="n">{{ms .LatencyMS}}</td><td class="n">{{.InFlight}}</td><td class="n">{{.Streams}}</td>
<td class="n">{{with .Load}}{{printf "%.2f" .Utilization}}{{if .Limit}} of {{printf "%.0f" .Limit}}{{end}}{{else}}-{{end}}</td>
<td>{{.Chart}}</td><td class="n">{{last .AttemptsPerSecond}} / {{last .FailuresPerSecond}}</td><td class="n">{{.Attempts}}</td><td class="n">{{.Failures}}</td></tr>
{{end}}</table>
</section>
{{end}}
</body></html>
{{define "watch"}}Consul watch at {{.Consul}}: index {{.Index}}, last answer {{.Answered}}{{if .BehindLeaderMS}}, {{ms .BehindLeaderMS}} behind the leader{{end}};
{{if .Stale}}STALE{{else}}fresh{{end}}{{if .Error}}; failing since {{.ErrorSince}}: {{.Error}}{{end}}{{end}}
`))

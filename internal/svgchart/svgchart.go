package svgchart

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// Point is one sample of a series.
type Point struct{ X, Y float64 }

// Series is one line of a chart.
type Series struct {
	Name   string
	Color  string // a CSS colour; empty takes the next of a default palette
	Points []Point
}

// Mark is a labelled vertical line at X: a fault, an event. Label is
// drawn beside the line (keep it short: "#3"); Note, when set, is its
// tooltip.
type Mark struct {
	X     float64
	Label string
	Note  string
}

// Chart is a line chart. Zero XMin and XMax take the data's range; zero
// YMax takes the data's largest Y (the y axis starts at 0).
type Chart struct {
	Title         string
	XLabel        string // the x axis' unit, "s"
	YLabel        string // the y axis' unit, "calls/s"
	Width, Height int    // pixels; zero means 640 by 200
	XMin, XMax    float64
	YMax          float64
	Series        []Series
	Marks         []Mark
}

// palette is Tableau's ten, told apart in print and by most eyes.
var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"}

// margins of a chart with axes: left, right, bottom; the top one is
// mt, or mtLegend with a legend row under the title.
const ml, mr, mt, mtLegend, mb = 56, 12, 22, 40, 34

// Render writes c as an <svg> element.
func (c Chart) Render(w io.Writer) error {
	width, height := c.Width, c.Height
	if width <= 0 {
		width = 640
	}
	if height <= 0 {
		height = 200
	}
	xmin, xmax, ymax := c.bounds()
	top, legendY := float64(mt), 15 // a row more for a legend under a title
	if c.Title != "" || c.YLabel != "" {
		top, legendY = mtLegend, 31
	}
	pw, ph := float64(width-ml-mr), float64(height-mb)-top
	x := func(v float64) float64 { return ml + (v-xmin)/(xmax-xmin)*pw }
	y := func(v float64) float64 { return top + ph - v/ymax*ph }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`, width, height, width, height)
	switch {
	case c.Title != "" && c.YLabel != "":
		fmt.Fprintf(&b, `<text x="4" y="14"><tspan font-weight="bold">%s</tspan> (%s)</text>`, esc(c.Title), esc(c.YLabel))
	case c.Title != "":
		fmt.Fprintf(&b, `<text x="4" y="14" font-weight="bold">%s</text>`, esc(c.Title))
	case c.YLabel != "":
		fmt.Fprintf(&b, `<text x="4" y="14">%s</text>`, esc(c.YLabel))
	}
	// Axes, with ticks at 0, half and the top of y, and five along x.
	fmt.Fprintf(&b, `<path d="M%d %.0f V%.1f H%.1f" fill="none" stroke="#888"/>`, ml, top, top+ph, ml+pw)
	for _, v := range []float64{0, ymax / 2, ymax} {
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`, ml-4, y(v)+4, num(v))
		fmt.Fprintf(&b, `<path d="M%d %.1f H%.1f" stroke="#eee"/>`, ml, y(v), ml+pw)
	}
	step := niceStep((xmax - xmin) / 6)
	for v := math.Ceil(xmin/step) * step; v <= xmax+step/1e6; v += step {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s%s</text>`, x(v), top+ph+14, num(v), esc(c.XLabel))
	}
	for i, m := range c.Marks {
		if m.X < xmin || m.X > xmax {
			continue
		}
		fmt.Fprintf(&b, `<g class="mark">`)
		if m.Note != "" {
			fmt.Fprintf(&b, `<title>%s</title>`, esc(m.Note))
		}
		fmt.Fprintf(&b, `<path d="M%.1f %.0f V%.1f" stroke="#999" stroke-dasharray="3,3"/>`, x(m.X), top, top+ph)
		// Labels alternate between two rows so that close marks stay legible.
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="10" fill="#555">%s</text></g>`, x(m.X)+2, top+ph+26-float64(i%2)*(ph+10), esc(m.Label))
	}
	c.lines(&b, x, y)
	// Legend, from the left, on a row of its own.
	lx := float64(ml)
	for i, s := range c.Series {
		fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="10" height="10" fill="%s"/><text x="%.1f" y="%d">%s</text>`, lx, legendY-9, color(s, i), lx+13, legendY, esc(s.Name))
		lx += 7*float64(len(s.Name)) + 24
	}
	b.WriteString(`</svg>`)
	_, err := io.WriteString(w, b.String())
	return err
}

// Sparkline writes series as a bare chart of width by height pixels,
// without axes, scaled to ymax (zero: the data's largest Y) over x from
// xmin to xmax: a cell of a table.
func Sparkline(w io.Writer, width, height int, xmin, xmax, ymax float64, series ...Series) error {
	c := Chart{XMin: xmin, XMax: xmax, YMax: ymax, Series: series}
	xmin, xmax, ymax = c.bounds()
	x := func(v float64) float64 { return 1 + (v-xmin)/(xmax-xmin)*float64(width-2) }
	y := func(v float64) float64 { return 1 + float64(height-2) - v/ymax*float64(height-2) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">`, width, height, width, height)
	fmt.Fprintf(&b, `<path d="M0 %d H%d" stroke="#ddd"/>`, height-1, width)
	c.lines(&b, x, y)
	b.WriteString(`</svg>`)
	_, err := io.WriteString(w, b.String())
	return err
}

func (c Chart) lines(b *strings.Builder, x, y func(float64) float64) {
	for i, s := range c.Series {
		if len(s.Points) == 0 {
			continue
		}
		fmt.Fprintf(b, `<polyline fill="none" stroke-width="1.5" stroke="%s" points="`, color(s, i))
		for j, p := range s.Points {
			if j > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(b, "%.1f,%.1f", x(p.X), y(math.Max(0, p.Y)))
		}
		b.WriteString(`"><title>` + esc(s.Name) + `</title></polyline>`)
	}
}

// bounds are the chart's x range and y top, from its fields or its data,
// never empty.
func (c Chart) bounds() (xmin, xmax, ymax float64) {
	xmin, xmax, ymax = c.XMin, c.XMax, c.YMax
	if xmin == 0 && xmax == 0 {
		xmin, xmax = math.Inf(1), math.Inf(-1)
		for _, s := range c.Series {
			for _, p := range s.Points {
				xmin, xmax = math.Min(xmin, p.X), math.Max(xmax, p.X)
			}
		}
		if math.IsInf(xmin, 0) {
			xmin, xmax = 0, 1
		}
	}
	if xmax <= xmin {
		xmax = xmin + 1
	}
	if ymax <= 0 {
		for _, s := range c.Series {
			for _, p := range s.Points {
				ymax = math.Max(ymax, p.Y)
			}
		}
	}
	if ymax <= 0 || math.IsNaN(ymax) || math.IsInf(ymax, 0) {
		ymax = 1
	}
	return xmin, xmax, ymax
}

func color(s Series, i int) string {
	if s.Color != "" {
		return esc(s.Color)
	}
	return palette[i%len(palette)]
}

// niceStep is the 1, 2 or 5 times a power of ten nearest above raw.
func niceStep(raw float64) float64 {
	if raw <= 0 || math.IsNaN(raw) || math.IsInf(raw, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

// num is v for an axis: short.
func num(v float64) string {
	switch a := math.Abs(v); {
	case a >= 10000:
		return fmt.Sprintf("%.0fk", v/1000)
	case a >= 100 || a == math.Trunc(a):
		return fmt.Sprintf("%.0f", v)
	case a >= 1:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2g", v)
	}
}

func esc(s string) string { return html.EscapeString(s) }

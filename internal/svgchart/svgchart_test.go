package svgchart

import (
	"encoding/xml"
	"io"
	"strings"
	"testing"
)

func TestRenderIsWellFormedSVGWithItsDataAndMarks(t *testing.T) {
	var b strings.Builder
	c := Chart{
		Title: "calls <per> second", XLabel: "s", YLabel: "calls/s",
		Series: []Series{
			{Name: "offered", Points: []Point{{0, 100}, {1, 200}, {2, 150}}},
			{Name: "failed", Color: "red", Points: []Point{{0, 0}, {1, 5}, {2, 0}}},
		},
		Marks: []Mark{{X: 1, Label: "#1", Note: "SIGSTOP trimsvc-2"}, {X: 9, Label: "out of range"}},
	}
	if err := c.Render(&b); err != nil {
		t.Fatal(err)
	}
	svg := b.String()
	wellFormed(t, svg)
	for _, want := range []string{"calls &lt;per&gt; second", "<title>SIGSTOP trimsvc-2</title>", ">#1<", `stroke="red"`, ">offered<", ">200<", ">0.5s<", ">2s<"} {
		if !strings.Contains(svg, want) {
			t.Errorf("chart lacks %q:\n%s", want, svg)
		}
	}
	if strings.Contains(svg, "out of range") {
		t.Error("a mark outside the x range was drawn")
	}
	// x runs from 56 to 628 pixels; y from 0 at 166 to 200 at 40, under the title and legend.
	if !strings.Contains(svg, `points="56.0,103.0 342.0,40.0 628.0,71.5"`) {
		t.Errorf("offered's line is not where its data puts it:\n%s", svg)
	}
}

func TestSparklineOfNothingIsStillAnImage(t *testing.T) {
	var b strings.Builder
	if err := Sparkline(&b, 120, 24, 0, 0, 0, Series{Name: "empty"}); err != nil {
		t.Fatal(err)
	}
	wellFormed(t, b.String())
	if strings.Contains(b.String(), "NaN") || strings.Contains(b.String(), "Inf") {
		t.Errorf("sparkline of no data: %s", b.String())
	}
}

func wellFormed(t *testing.T, s string) {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(s))
	for {
		_, err := d.Token()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, s)
		}
	}
}

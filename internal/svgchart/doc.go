// Package svgchart draws small line charts as inline SVG, with no
// JavaScript and no dependency: the sparklines of the client's live page
// (client.Handler), the timeline of a chaos run and the latency of the
// bench's gray-failure and overload cases.
//
// A chart is a few polylines over a shared x axis, with optional labelled
// marks (the faults of a chaos run) and a y axis scaled to the data. It is
// our own rather than a charting library's: the maintained Go ones
// (go-echarts, gonum/plot) render through JavaScript or pull a font and
// image stack into the module graph of every program that imports the
// client, for some hundred lines of SVG.
package svgchart

package otelkit

import (
	"context"
	"sync"

	"github.com/go-kit/kit/metrics"
	"github.com/go-kit/kit/metrics/multi"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	otelmetric "go.opentelemetry.io/otel/metric"
)

type counter struct {
	c     otelmetric.Float64Counter
	attrs []attribute.KeyValue
}

func (c counter) With(labelValues ...string) metrics.Counter {
	return counter{c: c.c, attrs: with(c.attrs, labelValues)}
}

func (c counter) Add(delta float64) {
	c.c.Add(context.Background(), delta, otelmetric.WithAttributes(c.attrs...))
}

type gauge struct {
	g      otelmetric.Float64Gauge
	attrs  []attribute.KeyValue
	values *values // shared by every With of one gauge
}

// values are a gauge's current values, by attribute set.
type values struct {
	mu sync.Mutex
	m  map[attribute.Distinct]float64
}

func (g gauge) With(labelValues ...string) metrics.Gauge {
	return gauge{g: g.g, attrs: with(g.attrs, labelValues), values: g.values}
}

func (g gauge) Set(value float64) { g.record(func(float64) float64 { return value }) }

func (g gauge) Add(delta float64) { g.record(func(v float64) float64 { return v + delta }) }

func (g gauge) record(next func(float64) float64) {
	set := attribute.NewSet(g.attrs...)
	g.values.mu.Lock()
	v := next(g.values.m[set.Equivalent()])
	g.values.m[set.Equivalent()] = v
	// Recorded under the lock, so that the last value recorded is the
	// last value set.
	g.g.Record(context.Background(), v, otelmetric.WithAttributeSet(set))
	g.values.mu.Unlock()
}

// with appends go-kit label values, name and value in turn, to attrs; an
// odd one out gets the value "unknown", as go-kit's own adapters do.
func with(attrs []attribute.KeyValue, labelValues []string) []attribute.KeyValue {
	if len(labelValues)%2 != 0 {
		labelValues = append(labelValues, "unknown")
	}
	out := make([]attribute.KeyValue, len(attrs), len(attrs)+len(labelValues)/2)
	copy(out, attrs)
	for i := 0; i < len(labelValues); i += 2 {
		out = append(out, attribute.String(labelValues[i], labelValues[i+1]))
	}
	return out
}

// Tee makes instruments of one meter that report beside a program's own
// go-kit instruments.
type Tee struct {
	meter  otelmetric.Meter
	prefix string
}

// NewTee returns a Tee of the meter scope of mp, naming its instruments
// prefix followed by their names.
func NewTee(mp otelmetric.MeterProvider, scope, prefix string) Tee {
	return Tee{meter: mp.Meter(scope), prefix: prefix}
}

// Counter is mine (nil: none) and the OpenTelemetry counter name both.
func (t Tee) Counter(mine metrics.Counter, name, unit, description string) metrics.Counter {
	c, err := t.meter.Float64Counter(t.prefix+name, otelmetric.WithDescription(description), otelmetric.WithUnit(unit))
	if err != nil {
		otel.Handle(err)
	}
	if mine == nil {
		return counter{c: c}
	}
	return multi.NewCounter(mine, counter{c: c})
}

// Gauge is mine (nil: none) and the OpenTelemetry gauge name both.
func (t Tee) Gauge(mine metrics.Gauge, name, unit, description string) metrics.Gauge {
	g, err := t.meter.Float64Gauge(t.prefix+name, otelmetric.WithDescription(description), otelmetric.WithUnit(unit))
	if err != nil {
		otel.Handle(err)
	}
	theirs := gauge{g: g, values: &values{m: map[attribute.Distinct]float64{}}}
	if mine == nil {
		return theirs
	}
	return multi.NewGauge(mine, theirs)
}

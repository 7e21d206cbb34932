package main

import (
	"fmt"

	"github.com/go-kit/kit/metrics"
	kitprometheus "github.com/go-kit/kit/metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// newMetrics creates trimsvc's metrics on a registry of its own (never
// Prometheus' global one), with the Go and process collectors, and returns
// the instruments trimsvc.InstrumentingMiddleware takes. Prometheus lives
// here, in the main, so that a program importing trimkit's packages does not
// inherit it.
func newMetrics() (*prometheus.Registry, metrics.Counter, metrics.Histogram, error) {
	reg := prometheus.NewRegistry()
	labels := []string{"method", "code"}
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trimsvc_requests_total",
		Help: "Requests handled by the trim service, by method and status code.",
	}, labels)
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "trimsvc_request_duration_seconds",
		Help:    "Time spent handling requests, by method and status code.",
		Buckets: prometheus.ExponentialBuckets(0.00005, 4, 10), // 50µs .. ~13s
	}, labels)
	for _, c := range []prometheus.Collector{
		requests, duration,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, nil, nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return reg, kitprometheus.NewCounter(requests), kitprometheus.NewHistogram(duration), nil
}

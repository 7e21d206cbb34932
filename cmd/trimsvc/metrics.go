package main

import (
	"fmt"

	"github.com/go-kit/kit/metrics"
	kitprometheus "github.com/go-kit/kit/metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/trimkit/trimkit/sd"
)

// instruments are what trimsvc's metrics are fed through.
type instruments struct {
	// requests and duration are what trimsvc.InstrumentingMiddleware takes.
	requests metrics.Counter
	duration metrics.Histogram
	// consulFailures and consulFailing, with a "loop" label value
	// ("registration", "load_report"), are what the Consul loops of a
	// serving instance report their failures to.
	consulFailures metrics.Counter
	consulFailing  metrics.Gauge
}

// loop returns the option that makes the Consul loop named loop report to
// the Consul failure metrics.
func (m instruments) loop(loop string) sd.LoopOption {
	return sd.WithFailureMetrics(m.consulFailures.With("loop", loop), m.consulFailing.With("loop", loop))
}

// newMetrics creates trimsvc's metrics on a registry of its own (never
// Prometheus' global one), with the Go and process collectors. Prometheus
// lives here, in the main, so that a program importing trimkit's packages
// does not inherit it.
func newMetrics() (*prometheus.Registry, instruments, error) {
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
	failures := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trimsvc_consul_failures_total",
		Help: "Failed attempts of the serving instance to reach its registration (loop=registration) or its load report (loop=load_report) in Consul: agent unreachable, ACL token refused (403), TLS refused.",
	}, []string{"loop"})
	failing := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "trimsvc_consul_failing",
		Help: "1 while the attempts of the loop (registration, load_report) to reach Consul fail, the instance serving on; 0 otherwise.",
	}, []string{"loop"})
	for _, loop := range []string{"registration", "load_report"} { // shown from the start, at 0
		failures.WithLabelValues(loop)
		failing.WithLabelValues(loop)
	}
	for _, c := range []prometheus.Collector{
		requests, duration, failures, failing,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, instruments{}, fmt.Errorf("register metrics: %w", err)
		}
	}
	return reg, instruments{
		requests: kitprometheus.NewCounter(requests), duration: kitprometheus.NewHistogram(duration),
		consulFailures: kitprometheus.NewCounter(failures), consulFailing: kitprometheus.NewGauge(failing),
	}, nil
}

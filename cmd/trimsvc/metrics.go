package main

import (
	"fmt"
	"slices"

	"github.com/go-kit/kit/metrics"
	kitprometheus "github.com/go-kit/kit/metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport/grpcserver"
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
	// admission is what the gRPC server's admission reports to.
	admission grpcserver.AdmissionMetrics
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
	shed := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "trimsvc_shed_total",
		Help: "Calls refused at once (ResourceExhausted, marked OVERLOADED) because the calls in flight had reached the concurrency limit; callers retry them on another instance.",
	})
	limit := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "trimsvc_concurrency_limit",
		Help: "The concurrency limit now: calls in flight past it are shed (-concurrency-limit).",
	})
	inflight := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "trimsvc_calls_in_flight",
		Help: "Calls in flight now, health checks excepted.",
	})
	refused := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "trimsvc_connections_refused_total",
		Help: "Connections closed as they were accepted: every place of the connection limit was held by an established connection.",
	})
	evicted := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "trimsvc_connections_evicted_total",
		Help: "Connections not yet established (TLS handshake or HTTP/2 preface not done) closed to make room for a newer one.",
	})
	timedOut := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trimsvc_connections_timed_out_total",
		Help: "Connections closed before they were established: stage=first_byte sent nothing in time, stage=handshake did not finish in time.",
	}, []string{"stage"})
	for _, loop := range []string{"registration", "load_report"} { // shown from the start, at 0
		failures.WithLabelValues(loop)
		failing.WithLabelValues(loop)
	}
	for _, stage := range []string{"first_byte", "handshake"} {
		timedOut.WithLabelValues(stage)
	}
	for _, c := range []prometheus.Collector{
		requests, duration, failures, failing, shed, limit, inflight, refused, evicted, timedOut,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, instruments{}, fmt.Errorf("register metrics: %w", err)
		}
	}
	return reg, instruments{
		requests: counterVec{v: requests}, duration: histogramVec{v: duration},
		consulFailures: kitprometheus.NewCounter(failures), consulFailing: kitprometheus.NewGauge(failing),
		admission: grpcserver.AdmissionMetrics{
			Shed: counter{shed}, Limit: gauge{limit}, InFlight: gauge{inflight},
			ConnsRefused: counter{refused}, ConnsEvicted: counter{evicted}, ConnsTimedOut: kitprometheus.NewCounter(timedOut),
		},
	}, nil
}

// counter and gauge adapt an unlabelled Prometheus metric to go-kit's
// interfaces without go-kit's label map per update: admission updates its
// gauges on every call.
type (
	counter struct{ c prometheus.Counter }
	gauge   struct{ g prometheus.Gauge }
)

func (c counter) With(...string) metrics.Counter { return c }
func (c counter) Add(delta float64)              { c.c.Add(delta) }
func (g gauge) With(...string) metrics.Gauge     { return g }
func (g gauge) Set(value float64)                { g.g.Set(value) }
func (g gauge) Add(delta float64)                { g.g.Add(delta) }

// counterVec and histogramVec adapt a labelled Prometheus metric to
// go-kit's interfaces: With resolves the child of the label values once it
// has all of them, so that a caller that keeps what With returns (as
// trimsvc.InstrumentingMiddleware does) updates it without go-kit's label
// map and Prometheus' label hashing per update.
type (
	counterVec struct {
		v   *prometheus.CounterVec
		lvs []string
	}
	histogramVec struct {
		v   *prometheus.HistogramVec
		lvs []string
	}
	histogram struct{ o prometheus.Observer }
)

func (c counterVec) With(lvs ...string) metrics.Counter {
	all := append(slices.Clip(c.lvs), lvs...)
	if child, err := c.v.GetMetricWith(labels(all)); err == nil {
		return counter{child}
	}
	return counterVec{v: c.v, lvs: all}
}

func (c counterVec) Add(delta float64) { c.v.With(labels(c.lvs)).Add(delta) }

func (h histogramVec) With(lvs ...string) metrics.Histogram {
	all := append(slices.Clip(h.lvs), lvs...)
	if child, err := h.v.GetMetricWith(labels(all)); err == nil {
		return histogram{child}
	}
	return histogramVec{v: h.v, lvs: all}
}

func (h histogramVec) Observe(value float64) { h.v.With(labels(h.lvs)).Observe(value) }

func (h histogram) With(...string) metrics.Histogram { return h }
func (h histogram) Observe(value float64)            { h.o.Observe(value) }

// labels turns go-kit's label values, name then value, into Prometheus'
// labels; a name without a value gets "unknown", as go-kit's adapter does.
func labels(lvs []string) prometheus.Labels {
	l := prometheus.Labels{}
	for i := 0; i < len(lvs); i += 2 {
		v := "unknown"
		if i+1 < len(lvs) {
			v = lvs[i+1]
		}
		l[lvs[i]] = v
	}
	return l
}

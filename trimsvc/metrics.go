package trimsvc

import (
	"fmt"

	"github.com/go-kit/kit/metrics"
	kitprometheus "github.com/go-kit/kit/metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the service's instruments, ready for InstrumentingMiddleware.
type Metrics struct {
	Requests metrics.Counter   // trimsvc_requests_total{method,code}
	Duration metrics.Histogram // trimsvc_request_duration_seconds{method,code}
}

// NewPrometheusMetrics creates the service's metrics and registers them with
// reg (not with Prometheus' global registry, so several services can live in
// one process, as they do in tests).
func NewPrometheusMetrics(reg prometheus.Registerer) (Metrics, error) {
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
	for _, c := range []prometheus.Collector{requests, duration} {
		if err := reg.Register(c); err != nil {
			return Metrics{}, fmt.Errorf("register trimsvc metrics: %w", err)
		}
	}
	return Metrics{
		Requests: kitprometheus.NewCounter(requests),
		Duration: kitprometheus.NewHistogram(duration),
	}, nil
}

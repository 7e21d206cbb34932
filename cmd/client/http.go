package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/go-kit/kit/metrics/multi"
	kitprometheus "github.com/go-kit/kit/metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/trimkit/trimkit/client"
)

// promMetrics are the client stack's metrics on a Prometheus registry of
// the command's own, with the Go and process collectors, for -http-addr's
// /metrics. Prometheus lives here, in the main, as in trimsvc.
func promMetrics() (*prometheus.Registry, client.Metrics, error) {
	reg := prometheus.NewRegistry()
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "trimclient_" + name, Help: help}, labels)
	}
	gauge := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "trimclient_" + name, Help: help}, nil)
	}
	attempts := counter("attempts_total", "Attempts of calls, first ones, retries and hedges, by instance and outcome (answered, failed, timeout, outpaced, abandoned, shed).", "instance", "outcome")
	ejections := counter("ejections_total", "Instances taken out of picking for failing where their peers did not, by instance.", "instance")
	failStatic := counter("fail_static_total", "Times discovery removed instances en masse and the client began to hold some alive on their connections.")
	held := gauge("held", "Instances held against discovery now (fail-static).")
	instances := gauge("instances", "Instances the client holds now, held ones included.")
	retries := counter("retries_total", "Attempts after a call's first, hedges excluded.")
	hedges := counter("hedges_total", "Hedged attempts.")
	exhausted := counter("retry_budget_exhausted_total", "Retries and hedges the retry budget refused.")
	throttled := counter("throttled_total", "Calls the client refused itself (adaptive throttling).")
	for _, c := range []prometheus.Collector{attempts, ejections, failStatic, held, instances, retries, hedges, exhausted, throttled,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(c); err != nil {
			return nil, client.Metrics{}, fmt.Errorf("metrics: %w", err)
		}
	}
	return reg, client.Metrics{
		Attempts:        kitprometheus.NewCounter(attempts),
		Ejections:       kitprometheus.NewCounter(ejections),
		FailStatic:      kitprometheus.NewCounter(failStatic),
		Held:            kitprometheus.NewGauge(held),
		Instances:       kitprometheus.NewGauge(instances),
		Retries:         kitprometheus.NewCounter(retries),
		Hedges:          kitprometheus.NewCounter(hedges),
		BudgetExhausted: kitprometheus.NewCounter(exhausted),
		Throttled:       kitprometheus.NewCounter(throttled),
	}, nil
}

// tee reports every instrument of m to its counterpart in also as well,
// where also has one.
func tee(m, also client.Metrics) client.Metrics {
	if also.Attempts != nil {
		m.Attempts = multi.NewCounter(m.Attempts, also.Attempts)
	}
	if also.Instances != nil {
		m.Instances = multi.NewGauge(m.Instances, also.Instances)
	}
	return m
}

// debugServer serves /metrics and /debug/trimkit on addr; Close stops it.
type debugServer struct {
	srv  *http.Server
	lis  net.Listener
	done chan error
}

func serveDebug(addr string, reg *prometheus.Registry) (*debugServer, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-http-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/debug/trimkit", client.Handler())
	s := &debugServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, lis: lis, done: make(chan error, 1)}
	go func() { s.done <- s.srv.Serve(lis) }()
	return s, nil
}

// URL is where the page is.
func (s *debugServer) URL() string { return "http://" + s.lis.Addr().String() + "/debug/trimkit" }

// Close stops serving, giving the requests in flight a second.
func (s *debugServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if serr := <-s.done; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

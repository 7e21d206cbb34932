package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/hashicorp/consul/api"
	rungroup "github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/trimkit/trimkit/pb"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport"
	"github.com/trimkit/trimkit/trimsvc"
)

const (
	// gracefulStopTimeout bounds GracefulStop; what is still running then is
	// cut off by Stop.
	gracefulStopTimeout = 5 * time.Second
	// deregisterTimeout bounds the deregistration call on shutdown.
	deregisterTimeout = 5 * time.Second
	// defaultMaxRecvMsgSize is grpc-go's own receive limit.
	defaultMaxRecvMsgSize = 4 << 20
)

func serve(ctx context.Context, cfg config, stderr io.Writer) error {
	logger := log.NewLogfmtLogger(log.NewSyncWriter(stderr))
	logger = level.NewFilter(logger, level.AllowInfo())
	logger = log.With(logger, "ts", log.DefaultTimestampUTC, "caller", log.DefaultCaller)

	lis, err := net.Listen("tcp", cfg.grpcAddr)
	if err != nil {
		return fmt.Errorf("listen on -grpc-addr %s: %w", cfg.grpcAddr, err)
	}
	defer lis.Close()
	host, port, err := cfg.advertised(lis.Addr().(*net.TCPAddr))
	if err != nil {
		return err
	}
	id := cfg.serviceIDFor(host, port)
	logger = log.With(logger, "service_id", id)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := trimsvc.NewPrometheusMetrics(reg)
	if err != nil {
		return err
	}
	svc, err := trimsvc.New(cfg.maxInputBytes)
	if err != nil {
		return err
	}
	svc = trimsvc.LoggingMiddleware(logger)(svc)
	svc = trimsvc.InstrumentingMiddleware(metrics.Requests, metrics.Duration, transport.CodeName)(svc)

	grpcServer := grpc.NewServer(grpc.MaxRecvMsgSize(max(defaultMaxRecvMsgSize, cfg.maxInputBytes+64<<10)))
	pb.RegisterTrimServer(grpcServer, transport.NewGRPCServer(trimsvc.NewServerSet(svc), id, logger))
	healthServer := health.NewServer() // SERVING for "" from the start
	healthpb.RegisterHealthServer(grpcServer, healthServer)
	reflection.Register(grpcServer)

	consulCfg := api.DefaultConfig()
	consulCfg.Address, consulCfg.Token = cfg.consulAddr, cfg.consulToken
	consul, err := api.NewClient(consulCfg)
	if err != nil {
		return fmt.Errorf("consul client for %s: %w", cfg.consulAddr, err)
	}
	registrar, err := sd.NewRegistrar(consul, cfg.consulAddr, sd.Registration{
		ID:              id,
		Name:            cfg.serviceName,
		Tags:            cfg.tags,
		Address:         host,
		Port:            port,
		CheckInterval:   cfg.checkInterval,
		DeregisterAfter: cfg.deregisterAfter,
	}, logger)
	if err != nil {
		return err
	}

	var (
		g           rungroup.Group
		shutdownErr error                 // of the Consul actor's shutdown; read after g.Run
		leftConsul  = make(chan struct{}) // closed once the instance has left Consul and drained
	)
	{ // gRPC: serve; stop only once the instance has left Consul and drained.
		g.Add(func() error {
			_ = level.Info(logger).Log("msg", "serving gRPC", "addr", lis.Addr(), "advertised", fmt.Sprintf("%s:%d", host, port))
			return grpcServer.Serve(lis)
		}, func(error) {
			// Interrupts run one after another, so wait elsewhere.
			go func() {
				<-leftConsul
				gracefulStop(grpcServer, logger)
			}()
		})
	}
	if cfg.httpAddr != "off" {
		httpLis, err := net.Listen("tcp", cfg.httpAddr)
		if err != nil {
			return fmt.Errorf("listen on -http-addr %s: %w", cfg.httpAddr, err)
		}
		defer httpLis.Close()
		httpServer := &http.Server{Handler: debugMux(reg, healthServer), ReadHeaderTimeout: 5 * time.Second}
		g.Add(func() error {
			_ = level.Info(logger).Log("msg", "serving HTTP debug", "addr", httpLis.Addr())
			if err := httpServer.Serve(httpLis); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		}, func(error) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = httpServer.Shutdown(ctx)
		})
	}
	{ // Consul: register once ready, keep registered; on interrupt leave and drain.
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			defer close(leftConsul)
			// Serve has not necessarily started yet, but the listener is
			// bound: the first health check's connection waits in its
			// backlog until Serve accepts it.
			err := registrar.RegisterWithRetry(ctx, cfg.registerTimeout)
			if err == nil {
				err = registrar.KeepRegistered(ctx, cfg.resyncInterval)
				shutdownErr = leave(registrar, healthServer, cfg.drain, logger)
			} else {
				healthServer.Shutdown()
			}
			return err
		}, func(error) {
			cancel()
		})
	}
	g.Add(rungroup.SignalHandler(ctx, syscall.SIGINT, syscall.SIGTERM))

	err = g.Run()
	var sig *rungroup.SignalError
	if errors.As(err, &sig) {
		_ = level.Info(logger).Log("msg", "stopped", "signal", sig.Signal)
		err = nil
	}
	return errors.Join(err, shutdownErr)
}

// leave takes the instance out of service: health NOT_SERVING (so Consul's
// check and grpc health clients see it going), deregistration, then drain,
// the time callers need to notice and stop picking this instance.
func leave(registrar *sd.Registrar, healthServer *health.Server, drain time.Duration, logger log.Logger) error {
	healthServer.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), deregisterTimeout)
	defer cancel()
	err := registrar.Deregister(ctx)
	if err != nil {
		_ = level.Error(logger).Log("msg", "deregistration failed", "err", err)
	} else {
		_ = level.Info(logger).Log("msg", "deregistered from consul; draining", "drain", drain)
	}
	time.Sleep(drain)
	return err
}

// gracefulStop waits for in-flight calls, at most gracefulStopTimeout.
func gracefulStop(s *grpc.Server, logger log.Logger) {
	done := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(gracefulStopTimeout):
		_ = level.Warn(logger).Log("msg", "graceful stop timed out; closing remaining connections", "timeout", gracefulStopTimeout)
		s.Stop()
		<-done
	}
}

// debugMux serves /metrics from reg and /healthz from the gRPC health state.
func debugMux(reg *prometheus.Registry, healthServer *health.Server) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		resp, err := healthServer.Check(r.Context(), &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			http.Error(w, "not serving", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

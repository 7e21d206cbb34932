package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	rungroup "github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/trimkit/trimkit/internal/addrfile"
	"github.com/trimkit/trimkit/internal/otelenv"
	"github.com/trimkit/trimkit/pb"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport/grpcserver"
	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
)

const (
	// gracefulStopTimeout bounds GracefulStop; what is still running then is
	// cut off by Stop.
	gracefulStopTimeout = 5 * time.Second
	// recvMargin is what a request may hold beyond its input: the
	// protobuf framing of one string field takes at most 11 bytes.
	recvMargin = 1 << 10
)

// instance is trimsvc built and ready to run: its listeners are bound, its
// servers and its registration made, nothing started yet.
type instance struct {
	cfg       config
	logger    log.Logger
	addrs     addrfile.Addrs
	lis       net.Listener
	life      *grpcserver.Instance // the gRPC server's life, in and out of Consul
	health    *health.Server
	httpLis   net.Listener // nil when -http-addr is off
	http      *http.Server
	reloadTLS func() error // nil without -tls-cert-file
	tracing   otelenv.Tracing
	lifeSpan  trace.Span // the instance's life; records nothing when tracing is off
}

func serve(ctx context.Context, cfg config, stderr io.Writer) error {
	in, err := build(cfg, stderr)
	if err != nil {
		return err
	}
	defer in.closeListeners()
	return in.run(ctx)
}

// build binds the listeners and builds everything that runs on them.
func build(cfg config, stderr io.Writer) (_ *instance, err error) {
	logger := log.NewLogfmtLogger(log.NewSyncWriter(stderr))
	logger = level.NewFilter(logger, level.AllowInfo())
	logger = log.With(logger, "ts", log.DefaultTimestampUTC, "caller", log.DefaultCaller)

	in := &instance{cfg: cfg}
	defer func() {
		if err != nil { // whatever was bound so far
			in.closeListeners()
		}
	}()
	if in.lis, err = net.Listen("tcp", cfg.grpcAddr); err != nil {
		return nil, fmt.Errorf("listen on -grpc-addr %s: %w", cfg.grpcAddr, err)
	}
	host, port, err := cfg.advertised(in.lis.Addr().(*net.TCPAddr))
	if err != nil {
		return nil, err
	}
	id := cfg.serviceIDFor(host, port)
	in.logger = log.With(logger, "service_id", id)
	in.addrs = addrfile.Addrs{ServiceID: id, GRPC: in.lis.Addr().String(), Advertised: net.JoinHostPort(host, strconv.Itoa(port))}

	reg, instr, err := newMetrics()
	if err != nil {
		return nil, err
	}
	svc, err := trimsvc.New(cfg.maxInputBytes)
	if err != nil {
		return nil, err
	}
	var meter trimsvc.LoadMeter
	if cfg.loadReportInterval > 0 {
		svc = meter.Middleware()(svc)
	}
	svc = trimsvc.LoggingMiddleware(in.logger)(svc)
	svc = trimsvc.InstrumentingMiddleware(instr.requests, instr.duration, trim.CodeName)(svc)

	concurrency, err := cfg.concurrency()
	if err != nil {
		return nil, err
	}
	limits := grpcserver.Limits{
		MaxRecvMsgSize: cfg.maxInputBytes + recvMargin, Concurrency: concurrency,
		MaxConnections: cfg.maxConns, MaxPendingConnections: cfg.maxPendingConns,
		FirstByteTimeout: cfg.firstByteTimeout, HandshakeTimeout: cfg.handshakeTimeout,
		Metrics: instr.admission, Logger: in.logger,
	}
	in.lis = limits.Listener(in.lis)
	tlsOpts, reloadTLS, err := grpcserver.TLS{
		CertFile: cfg.tlsCertFile, KeyFile: cfg.tlsKeyFile,
		ClientCAFile: cfg.tlsClientCAFile, HealthCheckCAFile: cfg.tlsCheckCAFile,
	}.ServerOptions()
	if err != nil {
		return nil, err
	}
	if cfg.tlsCertFile != "" {
		in.reloadTLS = reloadTLS
	}
	if in.tracing, err = otelenv.FromEnv(context.Background(), os.Getenv, "trimsvc"); err != nil {
		return nil, err
	}
	if o := in.tracing.ServerOption(); o != nil {
		tlsOpts = append(tlsOpts, o)
	}
	// The instance's life as a span, its lifecycle's log records as the
	// span's events (a span that records nothing when tracing is off).
	in.lifeSpan = in.tracing.Start("trimsvc.instance", attribute.String("trimsvc.service_id", id))
	lifeLogger := otelenv.Logger(in.logger, in.lifeSpan)
	server := limits.NewServer(tlsOpts...)
	pb.RegisterTrimServer(server, trim.NewGRPCServer(trimsvc.NewServerSet(svc), id, in.logger))
	in.health = health.NewServer() // the life registers it on server
	reflection.Register(server)

	if cfg.httpAddr != "off" {
		if in.httpLis, err = net.Listen("tcp", cfg.httpAddr); err != nil {
			return nil, fmt.Errorf("listen on -http-addr %s: %w", cfg.httpAddr, err)
		}
		in.addrs.HTTP = in.httpLis.Addr().String()
		in.http = &http.Server{Handler: debugMux(reg, in.health), ReadHeaderTimeout: 5 * time.Second}
	}

	consul, err := cfg.consul.NewClient()
	if err != nil {
		return nil, err
	}
	registration := cfg.registration(host, port)
	registrar, err := sd.NewRegistrar(consul, registration, lifeLogger, instr.loop("registration"))
	if err != nil {
		return nil, err
	}
	in.life = &grpcserver.Instance{
		Server:          server,
		Listener:        in.lis,
		Health:          in.health,
		RegisterTimeout: cfg.registerTimeout,
		ResyncInterval:  cfg.resyncInterval,
		// -drain 0 means none: the smallest Drain there is.
		Drain:       max(cfg.drain, time.Nanosecond),
		StopTimeout: gracefulStopTimeout,
		Logger:      lifeLogger,
	}
	if cfg.register {
		in.life.Registrar = registrar
	}
	if cfg.loadReportInterval > 0 {
		checkID := "" // the agent's own definition may name its check otherwise
		if cfg.register {
			checkID = registration.CheckID()
		}
		reporter, err := sd.NewLoadReporter(consul, cfg.serviceName, registration.ID, in.addrs.Advertised, checkID,
			cfg.loadReportInterval, meter.Sample, in.logger, instr.loop("load_report"))
		if err != nil {
			return nil, err
		}
		in.life.Background = append(in.life.Background, reporter.Run)
	}
	return in, nil
}

func (in *instance) closeListeners() {
	for _, l := range []net.Listener{in.lis, in.httpLis} {
		if l != nil {
			l.Close()
		}
	}
}

// run runs the instance until a signal or a failure, and returns nil after
// a clean shutdown on SIGTERM or SIGINT. The order of the instance's life
// (serve, register, keep registered, report load; NOT_SERVING, deregister,
// drain, stop) is grpcserver.Instance's; a signal, or another actor
// failing, cancels its context.
func (in *instance) run(ctx context.Context) error {
	if in.cfg.addrFile != "" {
		if err := addrfile.Write(in.cfg.addrFile, in.addrs); err != nil {
			return err
		}
		defer os.Remove(in.cfg.addrFile)
	}
	var (
		g rungroup.Group
		// lifeErr is what ends the life, leaving Consul included: the
		// signal, not the life, usually ends the group.
		lifeErr error
	)
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { lifeErr = in.life.Run(ctx); return nil }, func(error) { cancel() })
	}
	if in.http != nil {
		g.Add(func() error {
			_ = level.Info(in.logger).Log("msg", "serving HTTP debug", "addr", in.httpLis.Addr())
			if err := in.http.Serve(in.httpLis); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		}, func(error) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = in.http.Shutdown(ctx)
		})
	}
	g.Add(rungroup.SignalHandler(ctx, syscall.SIGINT, syscall.SIGTERM))
	if in.reloadTLS != nil {
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { in.reloadOnSIGHUP(ctx); return nil }, func(error) { cancel() })
	}

	err := g.Run() // once every actor has returned: lifeErr is set
	var sig *rungroup.SignalError
	if errors.As(err, &sig) {
		_ = level.Info(in.logger).Log("msg", "stopped", "signal", sig.Signal)
		err = nil
	}
	in.lifeSpan.End()
	flush, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if terr := in.tracing.Shutdown(flush); terr != nil {
		_ = level.Warn(in.logger).Log("msg", "tracing", "err", terr)
	}
	return errors.Join(err, lifeErr)
}

// reloadOnSIGHUP reads the TLS files again on every SIGHUP (they are also
// read again when they change on disk), until ctx ends.
func (in *instance) reloadOnSIGHUP(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := in.reloadTLS(); err != nil {
				_ = level.Error(in.logger).Log("msg", "SIGHUP: TLS files not reloaded; serving with those loaded last", "err", err)
			} else {
				_ = level.Info(in.logger).Log("msg", "SIGHUP: TLS files reloaded")
			}
		}
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

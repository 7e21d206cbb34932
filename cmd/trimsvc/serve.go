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

	"github.com/trimkit/trimkit/internal/tlsfiles"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	rungroup "github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/trimkit/trimkit/internal/addrfile"
	"github.com/trimkit/trimkit/pb"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport"
	"github.com/trimkit/trimkit/transport/grpcserver"
	"github.com/trimkit/trimkit/trimsvc"
)

const (
	// gracefulStopTimeout bounds GracefulStop; what is still running then is
	// cut off by Stop.
	gracefulStopTimeout = 5 * time.Second
	// deregisterTimeout bounds the deregistration call on shutdown.
	deregisterTimeout = 5 * time.Second
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
	grpc      *grpc.Server
	health    *health.Server
	httpLis   net.Listener // nil when -http-addr is off
	http      *http.Server
	registrar *sd.Registrar
	certs     *tlsfiles.Certs  // nil without -tls-cert-file
	checkCA   *tlsfiles.Certs  // nil without -tls-check-ca-file
	reporter  *sd.LoadReporter // nil without -load-report-interval
	leaveErr  error            // of leaving Consul, set by live before it returns
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

	reg, requests, duration, err := newMetrics()
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
	svc = trimsvc.InstrumentingMiddleware(requests, duration, transport.CodeName)(svc)

	limits := grpcserver.Limits{MaxRecvMsgSize: cfg.maxInputBytes + recvMargin}
	serverOpts := limits.ServerOptions()
	in.lis = limits.Listener(in.lis)
	if cfg.tlsCertFile != "" {
		if in.certs, err = tlsfiles.LoadCerts(cfg.tlsCertFile, cfg.tlsKeyFile, cfg.tlsClientCAFile); err != nil {
			return nil, err
		}
		var trust []tlsfiles.TrustOption
		if cfg.tlsCheckCAFile != "" {
			checkCA, err := tlsfiles.LoadCerts("", "", cfg.tlsCheckCAFile)
			if err != nil {
				return nil, err
			}
			in.checkCA = checkCA
			trust = append(trust, tlsfiles.HealthCheckCA(checkCA))
		}
		serverOpts = append(serverOpts, tlsfiles.ServerCreds(in.certs, trust...)...)
	}
	in.grpc = grpc.NewServer(serverOpts...)
	pb.RegisterTrimServer(in.grpc, transport.NewGRPCServer(trimsvc.NewServerSet(svc), id, in.logger))
	in.health = health.NewServer() // SERVING for "" from the start
	healthpb.RegisterHealthServer(in.grpc, in.health)
	reflection.Register(in.grpc)

	if cfg.httpAddr != "off" {
		if in.httpLis, err = net.Listen("tcp", cfg.httpAddr); err != nil {
			return nil, fmt.Errorf("listen on -http-addr %s: %w", cfg.httpAddr, err)
		}
		in.addrs.HTTP = in.httpLis.Addr().String()
		in.http = &http.Server{Handler: debugMux(reg, in.health), ReadHeaderTimeout: 5 * time.Second}
	}

	consul, _, where, err := cfg.consul.NewAPIClient()
	if err != nil {
		return nil, err
	}
	registration := cfg.registration(host, port)
	in.registrar, err = sd.NewRegistrar(sd.NewClient(consul), where, registration, in.logger)
	if err != nil {
		return nil, err
	}
	if cfg.loadReportInterval > 0 {
		checkID := "" // the agent's own definition may name its check otherwise
		if cfg.register {
			checkID = registration.CheckID()
		}
		in.reporter, err = sd.NewLoadReporter(sd.NewLoadClient(consul), cfg.serviceName, registration.ID, in.addrs.Advertised, checkID,
			cfg.loadReportInterval, meter.Sample, in.logger)
		if err != nil {
			return nil, err
		}
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
// a clean shutdown on SIGTERM or SIGINT.
func (in *instance) run(ctx context.Context) error {
	if in.cfg.addrFile != "" {
		if err := addrfile.Write(in.cfg.addrFile, in.addrs); err != nil {
			return err
		}
		defer os.Remove(in.cfg.addrFile)
	}
	var g rungroup.Group
	{ // The instance's life in Consul and on gRPC, in one actor: see live.
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return in.live(ctx) }, func(error) { cancel() })
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
	if in.certs != nil {
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { in.reloadOnSIGHUP(ctx); return nil }, func(error) { cancel() })
	}

	err := g.Run()
	var sig *rungroup.SignalError
	if errors.As(err, &sig) {
		_ = level.Info(in.logger).Log("msg", "stopped", "signal", sig.Signal)
		err = nil
	}
	return errors.Join(err, in.leaveErr)
}

// live is the instance's life, in the one order that loses no caller's
// call: serve gRPC, and only then register in Consul (the listener is bound
// and health is SERVING, so the first check passes); keep registered until
// ctx ends (a signal, or another actor failing) or gRPC stops by itself;
// then leave Consul (NOT_SERVING, deregister, drain, so that callers stop
// picking this instance while it still answers), and only after that stop
// gRPC gracefully, letting calls in flight finish. One function owns the
// whole order, so no interrupt has to wait for another. It returns the error
// that ended it; the error of leaving Consul goes to in.leaveErr, since a
// signal, not this actor, is what usually ends the group.
func (in *instance) live(ctx context.Context) (err error) {
	served := make(chan error, 1)
	go func() {
		_ = level.Info(in.logger).Log("msg", "serving gRPC", "addr", in.lis.Addr(), "advertised", in.addrs.Advertised)
		served <- in.grpc.Serve(in.lis)
	}()
	if !in.cfg.register {
		_ = level.Info(in.logger).Log("msg", "not registering: the agent's configuration owns the registration (-register=false)")
	} else if err := in.registrar.RegisterWithRetry(ctx, in.cfg.registerTimeout); err != nil {
		in.health.Shutdown()
		in.grpc.Stop()
		<-served
		return err
	}
	// Background work while serving: keeping registered, reporting load.
	// Each ends when bg does, or earlier on a failure no retry fixes (a
	// revoked token), which ends the instance too.
	var tasks []func(context.Context) error
	if in.cfg.register {
		tasks = append(tasks, func(ctx context.Context) error { return in.registrar.KeepRegistered(ctx, in.cfg.resyncInterval) })
	}
	if in.reporter != nil {
		tasks = append(tasks, in.reporter.Run)
	}
	bg, stopBackground := context.WithCancel(ctx)
	ended := make(chan error, len(tasks))
	for _, task := range tasks {
		go func() { ended <- task(bg) }()
	}
	running := len(tasks)
	select {
	case <-ctx.Done():
	case err = <-served:
		served = nil
		err = fmt.Errorf("gRPC server stopped: %w", err)
	case err = <-ended:
		running--
	}
	// The load report goes first (its key deleted), then the registration.
	stopBackground()
	for range running {
		err = errors.Join(err, <-ended)
	}

	in.leaveErr = in.leave()
	in.gracefulStop()
	if served != nil {
		err = errors.Join(err, <-served)
	}
	return err
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
			err := in.certs.Reload()
			if in.checkCA != nil {
				err = errors.Join(err, in.checkCA.Reload())
			}
			if err != nil {
				_ = level.Error(in.logger).Log("msg", "SIGHUP: TLS files not reloaded; serving with those loaded last", "err", err)
			} else {
				_ = level.Info(in.logger).Log("msg", "SIGHUP: TLS files reloaded")
			}
		}
	}
}

// leave takes the instance out of service: health NOT_SERVING (so Consul's
// check and grpc health clients see it going), deregistration, then drain,
// the time callers need to notice and stop picking this instance. With
// -register=false the agent owns the registration: the instance stays
// registered, and its check going critical takes it out of the passing
// list within a check interval, which the drain should cover.
func (in *instance) leave() error {
	in.health.Shutdown()
	if !in.cfg.register {
		_ = level.Info(in.logger).Log("msg", "NOT_SERVING; the agent's check takes the instance out; draining", "drain", in.cfg.drain)
		time.Sleep(in.cfg.drain)
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), deregisterTimeout)
	defer cancel()
	err := in.registrar.Deregister(ctx)
	if err != nil {
		_ = level.Error(in.logger).Log("msg", "deregistration failed", "err", err)
	} else {
		_ = level.Info(in.logger).Log("msg", "deregistered from consul; draining", "drain", in.cfg.drain)
	}
	time.Sleep(in.cfg.drain)
	return err
}

// gracefulStop waits for in-flight calls, at most gracefulStopTimeout.
func (in *instance) gracefulStop() {
	done := make(chan struct{})
	go func() {
		in.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(gracefulStopTimeout):
		_ = level.Warn(in.logger).Log("msg", "graceful stop timed out; closing remaining connections", "timeout", gracefulStopTimeout)
		in.grpc.Stop()
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

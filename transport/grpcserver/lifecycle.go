package grpcserver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/go-kit/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/trimkit/trimkit/sd"
)

// Defaults of an Instance's zero durations.
const (
	defaultRegisterTimeout = 30 * time.Second
	defaultResyncInterval  = 10 * time.Second
	defaultDrain           = 2 * time.Second
	defaultStopTimeout     = 5 * time.Second
	// deregisterTimeout bounds the deregistration call.
	deregisterTimeout = 5 * time.Second
)

// Server is what an Instance runs: *grpc.Server is one; HTTPServer adapts
// an *http.Server. Serve returns nil after GracefulStop or Stop.
type Server interface {
	Serve(net.Listener) error
	// GracefulStop stops accepting connections and calls, and returns once
	// the calls in flight have ended.
	GracefulStop()
	// Stop closes every connection at once.
	Stop()
}

var _ Server = (*grpc.Server)(nil)

// grpcServer returns the *grpc.Server that s is, or that it embeds (a
// GRPCServer).
func grpcServer(s Server) (*grpc.Server, bool) {
	switch s := s.(type) {
	case *grpc.Server:
		return s, true
	case *GRPCServer:
		return s.Server, true
	}
	return nil, false
}

// HTTPServer adapts s to Server: GracefulStop is Shutdown, Stop is Close,
// and Serve returns nil, not http.ErrServerClosed, after either.
func HTTPServer(s *http.Server) Server { return httpServer{s} }

type httpServer struct{ s *http.Server }

func (h httpServer) Serve(lis net.Listener) error {
	if err := h.s.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (h httpServer) GracefulStop() { _ = h.s.Shutdown(context.Background()) }
func (h httpServer) Stop()         { _ = h.s.Close() }

// Instance is one instance of a service through its whole life: Run serves
// Server on Listener, registers it in Consul once it is ready, keeps it
// registered, and on the way out takes it out of Consul before it stops
// serving, so that callers lose no call. The zero value of each optional
// field means its default; a negative duration is an error.
//
// An Instance is run once.
type Instance struct {
	// Server is what serves (required): a *grpc.Server, a GRPCServer
	// (Limits.NewServer) or an HTTPServer.
	Server Server
	// Listener is where it serves (required). Run closes it.
	Listener net.Listener
	// Registrar registers the instance in Consul. Nil means the agent's
	// own configuration owns the registration: leaving then only goes
	// NOT_SERVING (which turns the agent's check critical) and drains.
	Registrar *sd.Registrar
	// Health is the grpc.health.v1 server whose statuses follow the
	// instance. With a *grpc.Server (or GRPCServer) that has no health
	// service, Run registers it there (a new one when Health is nil); one
	// that has one of its own needs it given here. With another Server,
	// nil means no gRPC health.
	Health *health.Server
	// HealthService is a grpc.health.v1 service name whose status follows
	// the instance's, besides "" (the whole server's). Empty means the
	// Registrar's Registration().HealthService, the name Consul's check
	// asks about; the two cannot differ.
	HealthService string
	// Ready, when not nil, blocks until the service can take calls (caches
	// warm, connections made) and returns nil; until then health says
	// NOT_SERVING and nothing is registered. An error ends Run. It must
	// return when its ctx ends.
	Ready func(ctx context.Context) error
	// Background are tasks that run while the instance is registered (a
	// load reporter's Run, say). They are stopped (their ctx ends), and
	// waited for, before the instance deregisters: each must return then.
	// A task that returns an error ends the instance; one that returns nil
	// has only finished.
	Background []func(ctx context.Context) error
	// RegisterTimeout bounds the retries of the first registration: 30s by
	// default.
	RegisterTimeout time.Duration
	// ResyncInterval is how often the instance makes sure the agent still
	// holds its registration (sd.Registrar.KeepRegistered): 10s by
	// default. A failed round is retried sooner, with a backoff up to
	// ResyncInterval; it never ends the instance.
	ResyncInterval time.Duration
	// Drain is how long the instance goes on serving after it has left
	// Consul, for callers to notice and stop picking it: 2s by default.
	// It should cover the callers' discovery delay, and, without a
	// Registrar, the agent's check interval. To drain as little as
	// possible (tests), give 1ns.
	Drain time.Duration
	// StopTimeout bounds the graceful stop that lets calls in flight end;
	// what still runs then is cut off (Server.Stop). 5s by default. The
	// streaming calls of a GRPCServer still open then are ended first:
	// their contexts end, and they have up to 200ms more to answer
	// Unavailable ("server stopping; reopen on another instance"), so
	// that their callers open them again elsewhere.
	StopTimeout time.Duration
	// Logger logs the instance's steps. Nil means none.
	Logger log.Logger
}

// instance is an Instance checked and with its defaults, as Run runs it.
// It is read-only once made: every goroutine of Run may read it.
type instance struct {
	Instance
	healthNames []string // "" and HealthService, when set
	advertised  string   // the registered host:port, "" without a Registrar
	proto       string   // "gRPC", "HTTP" or "" (another Server), for messages
}

// check validates in and returns it with its defaults; it registers the
// health service on a *grpc.Server that lacks one.
func (in Instance) check() (*instance, error) {
	var errs []error
	if in.Server == nil {
		errs = append(errs, errors.New("no Server"))
	}
	if in.Listener == nil {
		errs = append(errs, errors.New("no Listener"))
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{{"RegisterTimeout", in.RegisterTimeout}, {"ResyncInterval", in.ResyncInterval}, {"Drain", in.Drain}, {"StopTimeout", in.StopTimeout}} {
		if d.d < 0 {
			errs = append(errs, fmt.Errorf("%s %v: must not be negative (0 means the default)", d.name, d.d))
		}
	}
	for i, task := range in.Background {
		if task == nil {
			errs = append(errs, fmt.Errorf("task %d of Background is nil", i))
		}
	}
	c := &instance{Instance: in}
	if in.Registrar != nil {
		reg := in.Registrar.Registration()
		c.advertised = net.JoinHostPort(reg.Address, strconv.Itoa(reg.Port))
		switch {
		case c.HealthService == "":
			c.HealthService = reg.HealthService
		case reg.HealthService != "" && reg.HealthService != c.HealthService:
			errs = append(errs, fmt.Errorf("HealthService %q differs from %q, the one Consul's check asks about", c.HealthService, reg.HealthService))
		}
	}
	s, isGRPC := grpcServer(in.Server)
	hasHealth := false
	if isGRPC {
		_, hasHealth = s.GetServiceInfo()[healthpb.Health_ServiceDesc.ServiceName]
		if hasHealth && in.Health == nil {
			errs = append(errs, errors.New("the Server has a grpc.health.v1 service of its own: give its *health.Server as Health"))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	c.RegisterTimeout = cmp.Or(c.RegisterTimeout, defaultRegisterTimeout)
	c.ResyncInterval = cmp.Or(c.ResyncInterval, defaultResyncInterval)
	c.Drain = cmp.Or(c.Drain, defaultDrain)
	c.StopTimeout = cmp.Or(c.StopTimeout, defaultStopTimeout)
	if c.Logger == nil {
		c.Logger = log.NewNopLogger()
	}
	c.healthNames = []string{""}
	if c.HealthService != "" {
		c.healthNames = append(c.healthNames, c.HealthService)
	}
	switch c.Server.(type) {
	case *grpc.Server, *GRPCServer:
		c.proto = "gRPC"
	case httpServer:
		c.proto = "HTTP"
	}
	if isGRPC && !hasHealth {
		if c.Health == nil {
			c.Health = health.NewServer()
		}
		healthpb.RegisterHealthServer(s, c.Health)
	}
	return c, nil
}

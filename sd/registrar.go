package sd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/internal/consulname"
	"github.com/trimkit/trimkit/internal/netaddr"
)

// Defaults of a Registration's zero fields.
const (
	// defaultCheckInterval is how often Consul checks an instance whose
	// Registration leaves CheckInterval zero: Consul's own usual interval.
	defaultCheckInterval = 10 * time.Second
	// defaultDeregisterAfter is how long an instance's check may stay
	// critical before Consul removes it, when DeregisterAfter is zero: the
	// shortest Consul honours (its reaper rounds lower values up to it).
	defaultDeregisterAfter = time.Minute
)

// Registration describes one service instance to register in Consul. A
// zero CheckInterval, DeregisterAfter or ID stands for its default (see
// each field); a negative duration is an error.
type Registration struct {
	// ID identifies the instance; it must be unique on the agent. Empty
	// means "<Name>-<Address>-<Port>", unique on an agent as long as one
	// instance listens on each address.
	ID string
	// Name is the service name callers look up.
	Name string
	// Tags are optional tags to filter on.
	Tags []string
	// Meta is optional metadata, key to value.
	Meta map[string]string
	// Address is the host (IP or name) callers and the health check dial.
	Address string
	// Port is the gRPC port callers and the health check dial.
	Port int
	// Region and Zone are the instance's locality (Consul 1.17 and later):
	// callers with a locality of their own (client.Config's Region and
	// Zone) prefer instances in their zone, then their region. Empty: none.
	Region, Zone string
	// HealthService is the grpc.health.v1 service name Consul's gRPC check
	// asks about: the check's target becomes "Address:Port/HealthService",
	// Consul's form for it. Empty (the default) asks about "", the whole
	// server's status. grpcserver.Instance keeps the status of this name
	// with that of "".
	HealthService string
	// CheckInterval is how often Consul runs the health check. Zero means
	// 10s, Consul's usual interval; Consul runs checks at most once a
	// second.
	CheckInterval time.Duration
	// CheckTimeout bounds one health check. Zero means the smaller of
	// CheckInterval and 2s.
	CheckTimeout time.Duration
	// CheckTLS runs the gRPC check over TLS (GRPCUseTLS); the agent
	// verifies the instance's certificate with its own CA and, with
	// enable_agent_tls_for_checks, presents its own certificate.
	CheckTLS bool
	// CheckTLSSkipVerify makes the agent's TLS check skip verifying the
	// instance's certificate: for an instance whose certificate comes from a
	// CA of its service's own, which the agents do not trust. The check
	// still needs the instance to answer over TLS.
	CheckTLSSkipVerify bool
	// CheckHTTPPath, when not empty, makes the health check an HTTP GET of
	// http://Address:Port followed by the path (https with CheckTLS) that
	// must answer 2xx, instead of the gRPC health check: for instances that
	// serve HTTP. It cannot go with HealthService.
	CheckHTTPPath string
	// DeregisterAfter is how long the check may stay critical before Consul
	// removes the instance on its own (DeregisterCriticalServiceAfter). It
	// cleans up after an instance that died without deregistering. Zero
	// means 1m, the shortest Consul honours (its reaper rounds lower values
	// up to it).
	DeregisterAfter time.Duration
}

// withDefaults returns r with its zero ID, CheckInterval and
// DeregisterAfter set to their defaults. Register, Definition and CheckID
// use it; At and a Registrar's Registration return it.
func (r Registration) withDefaults() Registration {
	if r.ID == "" {
		r.ID = consulname.DefaultServiceID(r.Name, r.Address, r.Port)
	}
	if r.CheckInterval == 0 {
		r.CheckInterval = defaultCheckInterval
	}
	if r.DeregisterAfter == 0 {
		r.DeregisterAfter = defaultDeregisterAfter
	}
	return r
}

// validate checks r with its defaults (see withDefaults).
func (r Registration) validate() error {
	r = r.withDefaults()
	var errs []error
	if err := consulname.ValidServiceID(r.ID); err != nil {
		errs = append(errs, err)
	}
	if err := consulname.ValidServiceName(r.Name); err != nil {
		errs = append(errs, err)
	}
	for _, tag := range r.Tags {
		if err := consulname.ValidTag(tag); err != nil {
			errs = append(errs, err)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(r.Meta)) {
		if err := consulname.ValidMetaKey(k); err != nil {
			errs = append(errs, err)
		}
		if v := r.Meta[k]; len(v) > 512 {
			errs = append(errs, fmt.Errorf("meta value of %q: %d bytes, over Consul's 512", k, len(v)))
		}
	}
	if r.Address == "" {
		errs = append(errs, errors.New("service address is empty"))
	}
	if r.Port <= 0 || r.Port > 65535 {
		errs = append(errs, fmt.Errorf("service port %d is not in 1-65535", r.Port))
	}
	if r.CheckInterval < 0 {
		errs = append(errs, fmt.Errorf("check interval %v is negative", r.CheckInterval))
	}
	if r.CheckTimeout < 0 {
		errs = append(errs, fmt.Errorf("check timeout %v is negative", r.CheckTimeout))
	}
	if r.CheckHTTPPath != "" && !strings.HasPrefix(r.CheckHTTPPath, "/") {
		errs = append(errs, fmt.Errorf("check HTTP path %q does not start with /", r.CheckHTTPPath))
	}
	if r.CheckHTTPPath != "" && r.HealthService != "" {
		errs = append(errs, fmt.Errorf("health service %q: an HTTP check (path %q) asks no gRPC health service", r.HealthService, r.CheckHTTPPath))
	}
	if r.DeregisterAfter < 0 {
		errs = append(errs, fmt.Errorf("deregister-after %v is negative", r.DeregisterAfter))
	}
	return errors.Join(errs...)
}

// agentRegistration is r, with its defaults, as the agent takes it.
func (r Registration) agentRegistration() *api.AgentServiceRegistration {
	r = r.withDefaults()
	timeout := r.CheckTimeout
	if timeout == 0 {
		timeout = min(r.CheckInterval, 2*time.Second)
	}
	hostPort := net.JoinHostPort(r.Address, strconv.Itoa(r.Port))
	check := &api.AgentServiceCheck{
		CheckID:                        r.CheckID(),
		Interval:                       r.CheckInterval.String(),
		Timeout:                        timeout.String(),
		DeregisterCriticalServiceAfter: r.DeregisterAfter.String(),
		TLSSkipVerify:                  r.CheckTLSSkipVerify,
	}
	if r.CheckHTTPPath != "" {
		scheme := "http"
		if r.CheckTLS {
			scheme = "https"
		}
		check.HTTP = scheme + "://" + hostPort + r.CheckHTTPPath
		check.Name = "HTTP " + check.HTTP
	} else {
		check.GRPC = hostPort
		if r.HealthService != "" {
			check.GRPC += "/" + r.HealthService
		}
		check.GRPCUseTLS = r.CheckTLS
		check.Name = "gRPC health " + check.GRPC
	}
	reg := &api.AgentServiceRegistration{
		ID:      r.ID,
		Name:    r.Name,
		Tags:    r.Tags,
		Meta:    r.Meta,
		Address: r.Address,
		Port:    r.Port,
		Check:   check,
	}
	if r.Region != "" || r.Zone != "" {
		reg.Locality = &api.Locality{Region: r.Region, Zone: r.Zone}
	}
	return reg
}

// CheckID is the ID of the instance's health check (with the default ID
// when r names none).
func (r Registration) CheckID() string { return "service:" + r.withDefaults().ID }

// Registrar registers one service instance with the local Consul agent and
// keeps it registered.
type Registrar struct {
	// Immutable once made.
	client Client
	reg    Registration
	logger log.Logger
	opts   loopOptions

	// mu guards registered, the fingerprint of the token of the last
	// registration ("" when unknown: a fixed token, or a fake client).
	mu         sync.Mutex
	registered string
}

// NewRegistrar returns a Registrar for reg (with its defaults) on the agent
// that client (ConsulConfig.NewClient's) talks to, whose address its errors
// name. It validates reg and makes no call yet. Its log lines carry
// what logger carries (the caller's logger usually names the instance
// already); opts say how KeepRegistered reports its failures. A nil client
// or logger is an error.
func NewRegistrar(client Client, reg Registration, logger log.Logger, opts ...LoopOption) (*Registrar, error) {
	if noClient(client) || logger == nil {
		return nil, errors.New("sd: NewRegistrar needs a Consul client and a logger")
	}
	if err := reg.validate(); err != nil {
		return nil, fmt.Errorf("invalid registration: %w", err)
	}
	return &Registrar{client: client, reg: reg.withDefaults(), logger: logger, opts: newLoopOptions(opts)}, nil
}

// Registration returns what the Registrar registers, defaults filled in.
func (r *Registrar) Registration() Registration { return r.reg }

// register registers the instance once, its check passing from the start
// when serving says the instance is ready and serving.
func (r *Registrar) register(ctx context.Context, serving bool) error {
	ctx, used := withTokenUsed(ctx)
	reg := r.reg.agentRegistration()
	if serving {
		reg.Check.Status = api.HealthPassing
	}
	if err := r.client.Register(ctx, reg); err != nil {
		return fmt.Errorf("register %s with consul at %s: %w", r.reg.ID, agentAddr(r.client, err), err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.registered = used.get()
	return nil
}

// registeredWith is the fingerprint of the token the last registration was
// made with, "" when unknown.
func (r *Registrar) registeredWith() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.registered
}

// Deregister removes the instance from the agent. An agent that does not
// hold it (a registration that never reached it, or a restarted agent that
// forgot it) has nothing to remove: that is not an error. A 403 is an
// answer only once the token file has been read again (a rotation that
// deleted the token the instance started with).
//
// A program that runs its instance with grpcserver.Instance does not call
// it: the Instance owns the order (KeepRegistered stopped and waited for,
// so that a resync cannot register a leaving instance again; NOT_SERVING;
// Deregister; drain).
func (r *Registrar) Deregister(ctx context.Context) error {
	err := r.client.Deregister(ctx, r.reg.ID)
	if status := (api.StatusError{}); errors.As(err, &status) && status.Code == http.StatusNotFound {
		return nil
	}
	if err != nil {
		return fmt.Errorf("deregister %s from consul at %s: %w", r.reg.ID, agentAddr(r.client, err), err)
	}
	return nil
}

// isRegistered reports whether the local agent holds the instance.
func (r *Registrar) isRegistered(ctx context.Context) (bool, error) {
	_, err := r.client.AgentService(ctx, r.reg.ID)
	var status api.StatusError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &status) && status.Code == http.StatusNotFound:
		return false, nil
	default:
		return false, fmt.Errorf("look up %s in consul at %s: %w", r.reg.ID, agentAddr(r.client, err), err)
	}
}

// Definition is the registration as a service definition in JSON, as an
// agent's -config-dir and `consul services register FILE` take it: the
// same ID, name, tags, address, port, check (gRPC or HTTP) and
// DeregisterCriticalServiceAfter that Register sends, defaults included, so that an operator
// can let the agent own the registration instead (trimsvc -register=false).
func (r Registration) Definition() ([]byte, error) {
	if err := r.validate(); err != nil {
		return nil, fmt.Errorf("invalid registration: %w", err)
	}
	reg := r.agentRegistration()
	type check struct {
		ID                             string `json:"id"`
		Name                           string `json:"name"`
		GRPC                           string `json:"grpc,omitempty"`
		GRPCUseTLS                     *bool  `json:"grpc_use_tls,omitempty"`
		HTTP                           string `json:"http,omitempty"`
		TLSSkipVerify                  bool   `json:"tls_skip_verify,omitempty"`
		Interval                       string `json:"interval"`
		Timeout                        string `json:"timeout"`
		DeregisterCriticalServiceAfter string `json:"deregister_critical_service_after"`
	}
	type locality struct {
		Region string `json:"region,omitempty"`
		Zone   string `json:"zone,omitempty"`
	}
	type service struct {
		ID       string            `json:"id"`
		Name     string            `json:"name"`
		Tags     []string          `json:"tags,omitempty"`
		Meta     map[string]string `json:"meta,omitempty"`
		Address  string            `json:"address"`
		Port     int               `json:"port"`
		Locality *locality         `json:"locality,omitempty"`
		Check    check             `json:"check"`
	}
	c := reg.Check
	var useTLS *bool
	if c.GRPC != "" {
		useTLS = &c.GRPCUseTLS
	}
	var loc *locality
	if l := reg.Locality; l != nil {
		loc = &locality{l.Region, l.Zone}
	}
	def := struct {
		Service service `json:"service"`
	}{service{reg.ID, reg.Name, reg.Tags, reg.Meta, reg.Address, reg.Port, loc,
		check{c.CheckID, c.Name, c.GRPC, useTLS, c.HTTP, c.TLSSkipVerify, c.Interval, c.Timeout, c.DeregisterCriticalServiceAfter}}}
	return json.MarshalIndent(def, "", "  ")
}

// At returns r with the Address and Port callers reach a listener bound at
// listen (a wildcard listener is advertised at the host's first IPv4
// address that is neither loopback nor link-local, or 127.0.0.1), and with
// its zero ID, CheckInterval and DeregisterAfter set to their defaults, so
// that its ID is known.
func (r Registration) At(listen net.Addr) (Registration, error) {
	if listen == nil {
		return Registration{}, errors.New("sd: Registration.At needs a listener's address")
	}
	host, port, err := netaddr.Advertise(listen.String(), "")
	if err != nil {
		return Registration{}, err
	}
	r.Address, r.Port = host, port
	return r.withDefaults(), nil
}

package client

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/go-kit/kit/sd/lb"
	"go.opentelemetry.io/otel/trace"

	"github.com/trimkit/trimkit/internal/consulname"
	"github.com/trimkit/trimkit/internal/defaults"
	"github.com/trimkit/trimkit/sd"
)

// Discovery modes, as Config.Discovery and cmd/client's -discovery take
// them.
const (
	DiscoveryConsul = "consul"
	DiscoveryDNS    = "dns"
	DiscoveryQuery  = "query"
)

// Config is what New needs to find a service in Consul and to call it.
// The zero value of each field but Service means its default.
type Config struct {
	// Consul is where and how to reach the Consul agent (address, ACL
	// token, TLS); its zero value is the Consul CLI's environment
	// (CONSUL_HTTP_ADDR and the rest), else 127.0.0.1:8500.
	Consul sd.ConsulConfig
	// Service is the Consul service to call. Required.
	Service string
	// Tags keeps only the instances that carry every one of them (with
	// DNS discovery, at most one).
	Tags []string
	// Discovery is how instances are found: "consul" (the default: the
	// HTTP API's blocking queries, a change seen in milliseconds), "dns"
	// (Consul's DNS interface, for places where only DNS is allowed out:
	// SRV records of <tag>.<service>.service.consul polled every second,
	// each target resolved through the same server) or "query" (a prepared
	// query, Query, run every second).
	Discovery string
	// DNSAddr is the DNS server of "dns" discovery. Default: 127.0.0.1:8600.
	DNSAddr string
	// Query is the prepared query of "query" discovery, its name or ID.
	// Default: Service. The query says which instances, with which tags,
	// and where to fail over to (Consul runs its Failover): for operators
	// who steer failover in Consul already. A prepared query does not
	// block: it is run every second, so a change is seen within a second
	// (a blocking query sees it in milliseconds). See docs/multi-dc.md.
	Query string
	// Read is how the Consul watch reads the catalog: by default any
	// server may answer (stale reads, which go on while there is no
	// leader); see sd.Read.
	Read sd.Read
	// Datacenters are the datacenters to call the service in, in order of
	// preference (Consul's ?dc=, through the agent's WAN-federated
	// servers). Empty: the agent's own, or Consul.Datacenter. One: that
	// one. With more, each is watched on its own (its passing instances,
	// and how many it has registered, passing or not) and is a priority
	// band, as in Envoy: the first takes every call while at least
	// 1/Overprovisioning of its instances are healthy (listed, connection
	// not failed, not ejected); below that, the shortfall spills over to
	// the next, in proportion, and every call once none is left. An
	// instance that comes back to a band that was spilling takes its
	// share again over 5s. A retry goes to another instance of the same
	// band, then of the next. A datacenter whose watch fails keeps the
	// instances it knew last (fail-static holds per datacenter), and does
	// not disturb the others. "_nearest", alone, stands for every
	// datacenter the agent's servers know, nearest first by Consul's
	// network coordinates (its /v1/catalog/datacenters order), read again
	// every 30s: the bands change places when the order does. Consul
	// discovery only; no Subset. See docs/multi-dc.md.
	Datacenters []string
	// Overprovisioning is the factor of Datacenters' bands. Default: 1.4,
	// Envoy's; at least 1.
	Overprovisioning float64
	// Region and Zone are the caller's locality. With either, each
	// datacenter's instances are bands by the locality they registered
	// (sd.Registration's Region and Zone, Consul 1.17 and later): those in
	// Zone first, then those in Region, then the rest, with the same
	// spill rule as between datacenters (Datacenters). Consul discovery
	// only. Default: none, every instance alike.
	Region, Zone string
	// Near, "_agent" or a node's name, prefers the instances on the nodes
	// nearest that one, by Consul's network coordinates (its ?near=): in
	// the agent's datacenter (and in each locality tier), those whose
	// node's estimated round trip from it is within twice the nearest
	// one's, or 1ms more, come first, then the rest, with the same spill
	// rule as between datacenters. Distances are read again every 30s;
	// until a node has a coordinate, its instances count as near. Consul
	// discovery only; the token needs node:read. Default: "", every
	// instance alike.
	Near string

	// CallConfig says how to call the instances found.
	CallConfig
}

// CallConfig is how a client calls the instances it knows of, whatever
// found them: New and NewFromInstancer take it. The zero value of each
// field means its default.
type CallConfig struct {
	// Balancer picks the instance of each attempt: RoundRobinName
	// ("round-robin", the default, the go-kit shape), P2CName ("p2c", the
	// power of two choices over latency and load; see NewP2C) or
	// LeastLoadedName ("least-loaded", by the load instances report in
	// Consul KV; see NewLeastLoaded).
	Balancer string
	// TLS, when its CAFile is set, calls the instances over TLS. Default:
	// plaintext.
	TLS TLS
	// Retry is how a call's attempts are made.
	Retry RetryConfig
	// EndpointerConfig is how the instances are kept: ejection,
	// fail-static, close grace, subsetting, and the metrics of the whole
	// stack (Retry's too: leave Retry.Metrics empty).
	EndpointerConfig
}

// RetryConfig is how Retry makes the attempts of a call. The zero value of
// each field means its default.
type RetryConfig struct {
	// MaxAttempts is the most attempts a call makes, the first included, a
	// hedge included. Default: 3.
	MaxAttempts int
	// Timeout bounds a call, all its attempts together. Default: 500ms.
	Timeout time.Duration
	// HedgeAfter, when positive, sends one more attempt to another
	// instance if the first has not answered after HedgeAfter; the first
	// answer wins and the other attempt is cancelled. Hedges count against
	// the retry budget. Only calls that Idempotent says are safe to send
	// twice are hedged. Default: 0, no hedging.
	HedgeAfter time.Duration
	// Budget bounds retries and hedges to a fraction of calls. Default:
	// RetryBudget's zero value: 20% of calls plus 10 a second, over 10s.
	Budget RetryBudget
	// Throttle makes the client refuse calls itself while the instances
	// refuse them for overload. Default: Throttle's zero value
	// (on).
	Throttle Throttle
	// Retryable decides, after a failed attempt, whether the call tries
	// again, in the shape of go-kit's lb.Callback: n is the number of
	// attempts made, err the last one's error; keepTrying false ends the
	// call with replacement, or err when replacement is nil. Retry asks it
	// only while the caller's context is live and attempts and time are
	// left. Default: by the class of the attempt's failure (see Class and
	// Ejection.Classify): another attempt after an InstanceFailure, a
	// Shed, an attempt's share running out, or no instance found.
	Retryable lb.Callback
	// Idempotent reports whether a request is safe to send twice: only
	// such calls are hedged, and retried after an attempt that may have
	// reached an instance. A call that is not is retried only when its
	// failed attempt certainly did not leave this process (no instance to
	// try, or the connection was not up to carry it: see Factory). A
	// context from WithIdempotent overrides it for one call. Default: every
	// request is idempotent.
	Idempotent func(request any) bool
	// Metrics are the counters Retry reports to (Retries, Hedges,
	// BudgetExhausted, Throttled), for a Retry built by hand; in a
	// CallConfig, give them in its Metrics.
	Metrics Metrics
	// TracerProvider, when set, traces every call: a span "trimkit.call"
	// and a child span "trimkit.attempt" per attempt, with the instance,
	// the attempt's number, whether it was a hedge, and how it ended
	// (docs/tracing.md). New, NewFromInstancer and NewConn also add
	// otelgrpc's client stats handler, so that each attempt's gRPC span
	// sits under it and the instance's server span continues the trace; a
	// Retry built by hand over a Factory gets that from
	// grpc.WithStatsHandler(otelgrpc.NewClientHandler(...)) given to the
	// Factory. Default: nil, no tracing, and no cost.
	TracerProvider trace.TracerProvider
}

// TLS is TLS to the instances, from PEM files that are read again when
// they change on disk.
type TLS struct {
	// CAFile verifies the instances' certificates, for ServerName or else
	// the address dialled (IP SANs for an IP). Setting it turns TLS on.
	CAFile string
	// CertFile and KeyFile are the client certificate, for instances that
	// require mutual TLS.
	CertFile, KeyFile string
	// ServerName is the name the instances' certificates must hold.
	ServerName string
}

// FieldError is a Config field whose value is out of range.
type FieldError struct {
	Field   string // as in the Config type, such as "Retry.MaxAttempts"
	Value   any
	Problem string
}

func (e *FieldError) Error() string { return fmt.Sprintf("%s %v: %s", e.Field, e.Value, e.Problem) }

// Validate returns nil when every field is in range, else every problem,
// each a *FieldError, joined. It is the one check of a Config: New runs it,
// and so can a program before it gets that far (cmd/client does, for its
// flags).
func (c Config) Validate() error {
	var errs []error
	switch c.Discovery {
	case "", DiscoveryConsul:
	case DiscoveryDNS:
		if len(c.Tags) > 1 {
			errs = append(errs, &FieldError{"Tags", fmt.Sprintf("%q", c.Tags), "DNS discovery takes at most one tag"})
		}
		if c.DNSAddr != "" {
			if _, _, err := net.SplitHostPort(c.DNSAddr); err != nil {
				errs = append(errs, &FieldError{"DNSAddr", c.DNSAddr, err.Error()})
			}
		}
	case DiscoveryQuery:
		if len(c.Tags) > 0 {
			errs = append(errs, &FieldError{"Tags", fmt.Sprintf("%q", c.Tags), "not with a prepared query (Discovery \"query\"): the query says which tags"})
		}
		if len(c.Datacenters) > 0 {
			errs = append(errs, &FieldError{"Datacenters", fmt.Sprintf("%q", c.Datacenters), "not with a prepared query (Discovery \"query\"): the query says where to fail over to"})
		}
	default:
		errs = append(errs, &FieldError{"Discovery", fmt.Sprintf("%q", c.Discovery), fmt.Sprintf("must be %q, %q or %q", DiscoveryConsul, DiscoveryDNS, DiscoveryQuery)})
	}
	if c.Query != "" && c.Discovery != DiscoveryQuery {
		errs = append(errs, &FieldError{"Query", fmt.Sprintf("%q", c.Query), "needs Discovery \"query\""})
	}
	if err := consulname.ValidServiceName(c.Service); err != nil {
		errs = append(errs, &FieldError{"Service", fmt.Sprintf("%q", c.Service), err.Error()})
	}
	for _, tag := range c.Tags {
		if err := consulname.ValidTag(tag); err != nil {
			errs = append(errs, &FieldError{"Tags", fmt.Sprintf("%q", c.Tags), err.Error()})
		}
	}
	if err := datacenterList(c.Datacenters); err != nil {
		errs = append(errs, &FieldError{"Datacenters", fmt.Sprintf("%q", c.Datacenters), err.Error()})
	}
	if len(c.Datacenters) > maxBands {
		errs = append(errs, &FieldError{"Datacenters", fmt.Sprintf("%q", c.Datacenters), fmt.Sprintf("at most %d", maxBands)})
	}
	if len(c.Datacenters) > 0 && c.Discovery == DiscoveryDNS {
		errs = append(errs, &FieldError{"Datacenters", fmt.Sprintf("%q", c.Datacenters), "needs Consul discovery (the HTTP API), not DNS"})
	}
	if (c.Region != "" || c.Zone != "") && c.Discovery != "" && c.Discovery != DiscoveryConsul {
		errs = append(errs, &FieldError{"Zone", fmt.Sprintf("%q", c.Zone), "a locality needs Consul discovery (the HTTP API)"})
	}
	if c.Near != "" {
		if c.Discovery != "" && c.Discovery != DiscoveryConsul {
			errs = append(errs, &FieldError{"Near", fmt.Sprintf("%q", c.Near), "needs Consul discovery (the HTTP API)"})
		} else if consulname.ValidNodeName(c.Near) != nil {
			errs = append(errs, &FieldError{"Near", fmt.Sprintf("%q", c.Near), fmt.Sprintf("must be %q or a node's name", consulname.NearAgent)})
		}
	}
	if c.banded() && c.Subset > 0 {
		errs = append(errs, &FieldError{"Subset", c.Subset, "not with more than one datacenter, nor a locality, nor Near"})
	}
	if c.Overprovisioning != 0 && !(c.Overprovisioning >= 1 && c.Overprovisioning <= 100) {
		errs = append(errs, &FieldError{"Overprovisioning", c.Overprovisioning, "must be within [1, 100] (0 means the default, 1.4)"})
	}
	if err := consulname.ValidRead(c.Read.Mode, c.Read.MaxStale); err != nil {
		errs = append(errs, &FieldError{"Read", fmt.Sprintf("%+v", c.Read), err.Error()})
	}
	if err := validConsul(c.Consul); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(append(errs, c.CallConfig.validate())...)
}

// validate returns nil when every field is in range, else every problem,
// each a *FieldError, joined.
func (c CallConfig) validate() error {
	var errs []error
	switch c.Balancer {
	case "", RoundRobinName, P2CName, LeastLoadedName:
	default:
		errs = append(errs, &FieldError{"Balancer", fmt.Sprintf("%q", c.Balancer), fmt.Sprintf("must be %q, %q or %q", RoundRobinName, P2CName, LeastLoadedName)})
	}
	if !c.Metrics.isZero() && !c.Retry.Metrics.isZero() {
		errs = append(errs, &FieldError{"Retry.Metrics", "set", "give the stack's metrics once, in Metrics (Retry's are among them)"})
	}
	return errors.Join(c.TLS.validate(), c.Retry.validate(), c.EndpointerConfig.validate(), errors.Join(errs...))
}

// Validate returns nil when every field is in range, else every problem,
// each a *FieldError, joined.
func (t TLS) validate() error {
	var errs []error
	if (t.CertFile == "") != (t.KeyFile == "") {
		errs = append(errs, &FieldError{"TLS.CertFile", t.CertFile, "needs TLS.KeyFile, and the other way round"})
	}
	if t.CAFile == "" && (t.CertFile != "" || t.ServerName != "") {
		errs = append(errs, &FieldError{"TLS.CAFile", "", "TLS to the instances needs a CA to verify them with"})
	}
	return errors.Join(errs...)
}

// validate returns nil when every field is in range, else every problem,
// each a *FieldError, joined.
func (c RetryConfig) validate() error {
	var errs []error
	if c.HedgeAfter < 0 {
		errs = append(errs, &FieldError{"Retry.HedgeAfter", c.HedgeAfter, "must not be negative (0 means no hedging)"})
	}
	if c.MaxAttempts < 0 {
		errs = append(errs, &FieldError{"Retry.MaxAttempts", c.MaxAttempts, "must not be negative (0 means the default, 3)"})
	}
	if c.Timeout < 0 {
		errs = append(errs, &FieldError{"Retry.Timeout", c.Timeout, "must not be negative (0 means the default, 500ms)"})
	}
	if err := c.Budget.validate(); err != nil {
		errs = append(errs, &FieldError{"Retry.Budget", fmt.Sprintf("%+v", c.Budget), err.Error()})
	}
	if err := c.Throttle.validate(); err != nil {
		errs = append(errs, &FieldError{"Retry.Throttle", fmt.Sprintf("%+v", c.Throttle), err.Error()})
	}
	return errors.Join(errs...)
}

func (c RetryConfig) withDefaults() RetryConfig {
	if c.MaxAttempts == 0 {
		c.MaxAttempts = defaults.MaxAttempts
	}
	if c.Timeout == 0 {
		c.Timeout = defaults.RetryTimeout
	}
	c.Budget = c.Budget.withDefaults()
	c.Throttle = c.Throttle.withDefaults()
	return c
}

// validConsul reports what ConsulConfig.NewClient would refuse in c: flags
// that contradict each other, missing or bad files, TLS settings for a
// plain-HTTP address. The client it makes has no connection yet.
func validConsul(c sd.ConsulConfig) error {
	consul, err := c.NewClient()
	if err != nil {
		return err
	}
	closeIdleOf(consul)()
	return nil
}

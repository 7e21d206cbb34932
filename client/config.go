package client

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/trimkit/trimkit/sd"
)

// Discovery modes, as Config.Discovery and cmd/client's -discovery take
// them.
const (
	DiscoveryConsul = "consul"
	DiscoveryDNS    = "dns"
)

// Defaults of Config.
const (
	DefaultDNSAddr      = sd.DefaultDNSAddr
	DefaultMaxStale     = sd.DefaultMaxStale
	DefaultServiceName  = "trimsvc"
	DefaultRetryMax     = 3
	DefaultRetryTimeout = 500 * time.Millisecond
)

// Config is what New needs to find the service in Consul and to call it.
// The zero value of each field means its default.
type Config struct {
	// ConsulAddr is the Consul agent's HTTP address. Default: the Consul api
	// package's, CONSUL_HTTP_ADDR or else 127.0.0.1:8500.
	ConsulAddr string
	// ConsulToken is the ACL token. Default: CONSUL_HTTP_TOKEN.
	ConsulToken string
	// ConsulTokenFile is a file holding the ACL token, instead of
	// ConsulToken. Default: CONSUL_HTTP_TOKEN_FILE.
	ConsulTokenFile string
	// ConsulCAFile verifies the agent's HTTPS certificate (ConsulAddr
	// https://...); ConsulCertFile and ConsulKeyFile are the client
	// certificate an agent with verify_incoming asks for;
	// ConsulTLSServerName is the name its certificate must hold. Defaults:
	// CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY,
	// CONSUL_TLS_SERVER_NAME.
	ConsulCAFile, ConsulCertFile, ConsulKeyFile, ConsulTLSServerName string
	// ServiceName is the Consul service to call. Default: "trimsvc".
	ServiceName string
	// Tags keeps only the instances that carry every one of them (with
	// DNS discovery, at most one).
	Tags []string
	// Discovery is how instances are found: "consul" (the default: the
	// HTTP API's blocking queries, a change seen in milliseconds) or "dns"
	// (Consul's DNS interface, SRV records polled every sd.DNSRefresh, for
	// places where only DNS is allowed out; see sd.DNSInstancer).
	Discovery string
	// DNSAddr is the DNS server of "dns" discovery. Default: 127.0.0.1:8600.
	DNSAddr string
	// DisallowStale makes every query a leader's read. By default any
	// server may answer (Consul's stale mode), so reads spread over the
	// servers and go on while there is no leader; an answer more than
	// MaxStale behind the leader is asked again of the leader while there is
	// one (see sd.AllowStale). The field is a negative because stale reads
	// are the default and a bool's zero value is false.
	DisallowStale bool
	// MaxStale bounds how far behind the leader a stale answer may be.
	// Default: 2s (sd.DefaultMaxStale, consul-template's).
	MaxStale time.Duration
	// UseCache asks the local agent's cache (streaming-backed for the
	// health endpoint) instead of the servers; see sd.UseCache.
	UseCache bool

	// CallConfig says how to call the instances found.
	CallConfig
}

// CallConfig is how a client calls the instances it knows of, whatever found
// them: New, NewFromInstancer and Retry take it. The zero value of each
// field means its default.
type CallConfig struct {
	// Balancer picks the instance of each attempt: RoundRobin
	// ("round-robin", the default, the go-kit shape), P2C ("p2c", the
	// power of two choices over latency and load; see NewP2C) or
	// LeastLoaded ("least-loaded", by the load instances report in Consul
	// KV; see NewLeastLoaded).
	Balancer string
	// RetryMax is the most attempts a call makes, the first included, a
	// hedge included. Default: 3.
	RetryMax int
	// RetryTimeout bounds a call, all its attempts together. Default: 500ms.
	RetryTimeout time.Duration
	// TLSCAFile, when set, calls the instances over TLS, verifying their
	// certificates against this CA for TLSServerName (default: the address
	// dialled); TLSCertFile and TLSKeyFile are the client certificate for
	// mutual TLS. All are read again when they change on disk. Default:
	// plaintext.
	TLSCAFile, TLSCertFile, TLSKeyFile, TLSServerName string
	// HedgeAfter, when positive, sends one more attempt to another instance
	// if the first has not answered after HedgeAfter; the first answer wins
	// and the other attempt is cancelled. Hedges count against the retry
	// budget. Only for calls that are safe to make twice (idempotent, as
	// TrimSpace is). Default: 0, no hedging.
	HedgeAfter time.Duration
}

// FieldError is a Config field whose value is out of range.
type FieldError struct {
	Field   string // as in the Config type, such as "RetryMax"
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
	default:
		errs = append(errs, &FieldError{"Discovery", fmt.Sprintf("%q", c.Discovery), fmt.Sprintf("must be %q or %q", DiscoveryConsul, DiscoveryDNS)})
	}
	if c.ServiceName != "" {
		if err := sd.ValidServiceName(c.ServiceName); err != nil {
			errs = append(errs, &FieldError{"ServiceName", fmt.Sprintf("%q", c.ServiceName), err.Error()})
		}
	}
	for _, tag := range c.Tags {
		if err := sd.ValidTag(tag); err != nil {
			errs = append(errs, &FieldError{"Tags", fmt.Sprintf("%q", c.Tags), err.Error()})
		}
	}
	if c.MaxStale < 0 {
		errs = append(errs, &FieldError{"MaxStale", c.MaxStale, "must not be negative (0 means the default, 2s)"})
	}
	if err := c.consul().Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(append(errs, c.CallConfig.Validate())...)
}

// Validate returns nil when every field is in range, else every problem,
// each a *FieldError, joined.
func (c CallConfig) Validate() error {
	var errs []error
	switch c.Balancer {
	case "", RoundRobin, P2C, LeastLoaded:
	default:
		errs = append(errs, &FieldError{"Balancer", fmt.Sprintf("%q", c.Balancer), fmt.Sprintf("must be %q, %q or %q", RoundRobin, P2C, LeastLoaded)})
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, &FieldError{"TLSCertFile", c.TLSCertFile, "needs TLSKeyFile, and the other way round"})
	}
	if c.TLSCAFile == "" && (c.TLSCertFile != "" || c.TLSServerName != "") {
		errs = append(errs, &FieldError{"TLSCAFile", "", "TLS to the instances needs a CA to verify them with"})
	}
	if c.HedgeAfter < 0 {
		errs = append(errs, &FieldError{"HedgeAfter", c.HedgeAfter, "must not be negative (0 means no hedging)"})
	}
	if c.RetryMax < 0 {
		errs = append(errs, &FieldError{"RetryMax", c.RetryMax, "must not be negative (0 means the default, 3)"})
	}
	if c.RetryTimeout < 0 {
		errs = append(errs, &FieldError{"RetryTimeout", c.RetryTimeout, "must not be negative (0 means the default, 500ms)"})
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.ServiceName == "" {
		c.ServiceName = DefaultServiceName
	}
	if c.MaxStale == 0 {
		c.MaxStale = DefaultMaxStale
	}
	c.CallConfig = c.CallConfig.withDefaults()
	return c
}

func (c CallConfig) withDefaults() CallConfig {
	if c.Balancer == "" {
		c.Balancer = RoundRobin
	}
	if c.RetryMax == 0 {
		c.RetryMax = DefaultRetryMax
	}
	if c.RetryTimeout == 0 {
		c.RetryTimeout = DefaultRetryTimeout
	}
	return c
}

// consul is where and how to reach Consul.
func (c Config) consul() sd.ConsulConfig {
	return sd.ConsulConfig{Address: c.ConsulAddr, Token: c.ConsulToken, TokenFile: c.ConsulTokenFile,
		CAFile: c.ConsulCAFile, CertFile: c.ConsulCertFile, KeyFile: c.ConsulKeyFile, TLSServerName: c.ConsulTLSServerName}
}

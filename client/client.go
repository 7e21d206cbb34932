package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/go-kit/kit/endpoint"
	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-cleanhttp"
	"google.golang.org/grpc"

	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/trimsvc"
)

// Defaults of Config.
const (
	DefaultServiceName  = "trimsvc"
	DefaultRetryMax     = 3
	DefaultRetryTimeout = 500 * time.Millisecond
)

// Config is what New needs to find and call the service. The zero value of
// each field means its default.
type Config struct {
	// ConsulAddr is the Consul agent's HTTP address. Default: the Consul api
	// package's, CONSUL_HTTP_ADDR or else 127.0.0.1:8500.
	ConsulAddr string
	// ConsulToken is the ACL token. Default: CONSUL_HTTP_TOKEN.
	ConsulToken string
	// ServiceName is the Consul service to call. Default: "trimsvc".
	ServiceName string
	// Tags keeps only the instances that carry every one of them.
	Tags []string
	// RetryMax is the most attempts a call makes. Default: 3.
	RetryMax int
	// RetryTimeout bounds a call, all attempts together. Default: 500ms.
	RetryTimeout time.Duration
}

func (c Config) withDefaults() (Config, error) {
	if c.ServiceName == "" {
		c.ServiceName = DefaultServiceName
	}
	if c.RetryMax == 0 {
		c.RetryMax = DefaultRetryMax
	}
	if c.RetryTimeout == 0 {
		c.RetryTimeout = DefaultRetryTimeout
	}
	var errs []error
	if c.RetryMax < 0 {
		errs = append(errs, fmt.Errorf("RetryMax %d is negative", c.RetryMax))
	}
	if c.RetryTimeout < 0 {
		errs = append(errs, fmt.Errorf("RetryTimeout %v is negative", c.RetryTimeout))
	}
	return c, errors.Join(errs...)
}

// Option changes an optional part of the client.
type Option func(*options)

type options struct {
	logger      log.Logger
	dialOptions []grpc.DialOption
	grace       time.Duration
}

// WithLogger sets the logger for discovery and connection events. Default:
// none.
func WithLogger(logger log.Logger) Option { return func(o *options) { o.logger = logger } }

// WithDialOptions adds gRPC dial options to every connection (after
// plaintext credentials, which they may override).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOptions = append(o.dialOptions, opts...) }
}

// WithCloseGrace sets how long the connection of an instance that left
// discovery stays open for calls in flight on it. Default: 2s.
func WithCloseGrace(d time.Duration) Option { return func(o *options) { o.grace = d } }

// Client calls the trim service on the instances discovery reports,
// round robin, with retries. It implements trimsvc.Service. Close it when
// done.
type Client struct {
	set        trimsvc.Set
	endpointer *Endpointer
	instancer  *sd.Instancer   // nil when the caller owns the Instancer
	consulHTTP *http.Transport // closed with the client; nil likewise
	closeOnce  sync.Once
	closeErr   error
}

var _ trimsvc.Service = (*Client)(nil)

// New builds the whole stack over Consul: an Instancer for the passing
// instances of cfg.ServiceName with cfg.Tags, an Endpointer with one gRPC
// connection per instance, round robin and Retry.
func New(cfg Config, opts ...Option) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("client config: %w", err)
	}
	o := newOptions(opts)
	consulCfg := api.DefaultConfig()
	if cfg.ConsulAddr != "" {
		consulCfg.Address = cfg.ConsulAddr
	}
	if cfg.ConsulToken != "" {
		consulCfg.Token = cfg.ConsulToken
	}
	// A transport of our own, so that Close can close its connections.
	consulCfg.Transport = cleanhttp.DefaultPooledTransport()
	consul, err := api.NewClient(consulCfg)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", consulCfg.Address, err)
	}
	instancer := sd.NewInstancer(consul, o.logger, cfg.ServiceName, cfg.Tags, true)
	c := build(instancer, cfg, o)
	c.instancer, c.consulHTTP = instancer, consulCfg.Transport
	c.set.TrimSpaceEndpoint = explainNoInstances(c.set.TrimSpaceEndpoint, cfg, consulCfg.Address, instancer)
	return c, nil
}

// NewFromInstancer builds the same stack as New over any go-kit Instancer
// (sd.FixedInstancer, a program's own discovery). Of cfg it uses RetryMax and
// RetryTimeout. Close does not stop instancer: the caller owns it.
func NewFromInstancer(instancer kitsd.Instancer, cfg Config, opts ...Option) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("client config: %w", err)
	}
	return build(instancer, cfg, newOptions(opts)), nil
}

func newOptions(opts []Option) options {
	o := options{logger: log.NewNopLogger(), grace: 2 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

func build(instancer kitsd.Instancer, cfg Config, o options) *Client {
	endpointer := NewEndpointer(instancer, Factory(o.dialOptions...), o.logger, o.grace)
	balancer := NewRoundRobin(endpointer)
	return &Client{
		set:        trimsvc.Set{TrimSpaceEndpoint: Retry(cfg.RetryMax, cfg.RetryTimeout, balancer)},
		endpointer: endpointer,
	}
}

// Endpoint returns the client's TrimSpace endpoint: it takes a
// trimsvc.TrimRequest and answers with a trimsvc.TrimResponse whose Instance
// names the instance that answered.
func (c *Client) Endpoint() endpoint.Endpoint { return c.set.TrimSpaceEndpoint }

// TrimSpace implements trimsvc.Service.
func (c *Client) TrimSpace(ctx context.Context, s string) (string, error) {
	return c.set.TrimSpace(ctx, s)
}

// Close stops discovery (a blocking Consul query in flight included) and
// closes every connection. It is safe to call more than once.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		if c.instancer != nil {
			c.instancer.Stop()
			c.consulHTTP.CloseIdleConnections()
		}
		c.closeErr = c.endpointer.Close()
	})
	return c.closeErr
}

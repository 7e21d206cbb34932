package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/trimkit/trimkit/internal/tlsfiles"

	"github.com/go-kit/kit/endpoint"
	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"
	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"

	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport"
	"github.com/trimkit/trimkit/trimsvc"
)

// Client calls the trim service on the instances discovery reports, with
// retries. It implements trimsvc.Service. Close it when done.
type Client struct {
	call       endpoint.Endpoint
	endpointer *Endpointer
	stop       func() // stops the discovery New started; nil otherwise

	closeOnce sync.Once
	closeErr  error
}

var _ trimsvc.Service = (*Client)(nil)

// New builds the whole stack over Consul: an sd.Instancer for the passing
// instances of cfg.ServiceName with cfg.Tags (an sd.DNSInstancer with DNS
// discovery), then what NewFromInstancer builds over it. Close stops the
// Instancer too. A call that finds no
// instance fails with a *NoInstancesError that says what was searched where.
func New(cfg Config, opts ...Option) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("client config: %w", err)
	}
	cfg = cfg.withDefaults()
	o, err := newOptions(opts)
	if err != nil {
		return nil, fmt.Errorf("client options: %w", err)
	}
	var (
		instancer kitsd.Instancer
		catalog   sd.Catalog // for load reports: the Consul watch's, when there is one
		where     string
		lastErr   func() error
		stops     []func()
	)
	var consul *api.Client
	// A Consul watch: to find the instances, or, with DNS discovery, to
	// match the load reports New watches to them.
	watchConsul := cfg.Discovery != DiscoveryDNS || (cfg.Balancer == LeastLoaded && o.loads == nil)
	if watchConsul {
		c, consulCfg, addr, err := cfg.consul().NewAPIClient()
		if err != nil {
			return nil, err
		}
		consul, where = c, addr
		// DefaultConfig pools the API's connections in a transport of its
		// own; nothing else would close them. Stops run last to first.
		stops = append(stops, consulCfg.Transport.CloseIdleConnections)
	}
	if cfg.Discovery == DiscoveryDNS {
		dns, err := sd.NewDNSInstancer(cfg.DNSAddr, cfg.ServiceName, cfg.Tags, 0, o.logger)
		if err != nil {
			return nil, err
		}
		where = cmp.Or(cfg.DNSAddr, DefaultDNSAddr) + " (its DNS interface)"
		instancer, lastErr = dns, dns.Err
		stops = append(stops, dns.Stop)
	}
	if watchConsul {
		var watch []sd.InstancerOption
		if !cfg.DisallowStale {
			watch = append(watch, sd.AllowStale(cfg.MaxStale))
		}
		if cfg.UseCache {
			watch = append(watch, sd.UseCache())
		}
		watcher := sd.NewInstancer(sd.NewClient(consul), o.logger, cfg.ServiceName, cfg.Tags, true, watch...)
		catalog = watcher
		stops = append(stops, watcher.Stop)
		if cfg.Discovery != DiscoveryDNS {
			instancer, lastErr = watcher, func() error { return watcher.State().Err }
		}
	}
	if cfg.Balancer == LeastLoaded && o.loads == nil {
		// Reports are matched to instances through the catalog: with DNS
		// discovery, a Consul watch of its own does that.
		o.loads = sd.NewLoadWatcher(sd.NewLoadClient(consul), cfg.ServiceName, catalog, o.logger)
		stops = append(stops, o.loads.Stop)
	}
	stop := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	d := discovery{
		stop: stop,
		explain: func(err error) error {
			return &NoInstancesError{
				Service:    cfg.ServiceName,
				Tags:       cfg.Tags,
				ConsulAddr: where,
				Discovery:  lastErr(),
				Err:        err,
			}
		},
	}
	c, err := build(instancer, cfg.CallConfig, o, d)
	if err != nil {
		d.stop()
		return nil, err
	}
	return c, nil
}

// NewFromInstancer builds the stack over any go-kit Instancer
// (sd.FixedInstancer, a program's own discovery): an Endpointer with one
// gRPC connection per instance (Factory), the balancer cfg names, and Retry
// as cfg says. Close does not stop instancer: the caller owns it.
func NewFromInstancer(instancer kitsd.Instancer, cfg CallConfig, opts ...Option) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("client config: %w", err)
	}
	o, err := newOptions(opts)
	if err != nil {
		return nil, fmt.Errorf("client options: %w", err)
	}
	return build(instancer, cfg.withDefaults(), o, discovery{})
}

// discovery is what New adds to the stack it builds over its Instancer.
type discovery struct {
	stop    func()                // stops the Instancer
	explain func(err error) error // explains a call that found no endpoint
}

// build builds the stack over instancer; cfg has its defaults and o is
// valid.
func build(instancer kitsd.Instancer, cfg CallConfig, o options, d discovery) (*Client, error) {
	newBalancer, err := balancerFor(cfg.Balancer, o.loads)
	if err != nil {
		return nil, err
	}
	var factory kitsd.Factory
	if cfg.TLSCAFile != "" {
		certs, err := tlsfiles.LoadCerts(cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSCAFile)
		if err != nil {
			return nil, err
		}
		secure := Factory(append(o.dialOptions, grpc.WithTransportCredentials(tlsfiles.ClientCreds(certs, cfg.TLSServerName)))...)
		factory = func(instance string) (endpoint.Endpoint, io.Closer, error) {
			e, closer, err := secure(instance)
			if err != nil {
				return nil, nil, err
			}
			return refusedHint(e, cfg.TLSCertFile), closer, nil
		}
	} else {
		plain := Factory(o.dialOptions...)
		factory = func(instance string) (endpoint.Endpoint, io.Closer, error) {
			e, closer, err := plain(instance)
			if err != nil {
				return nil, nil, err
			}
			return plaintextHint(e), closer, nil
		}
	}
	endpointer := newEndpointer(instancer, factory, o)
	call := newRetry(newBalancer(endpointer), cfg, o)
	if d.explain != nil {
		retry := call
		call = func(ctx context.Context, request interface{}) (interface{}, error) {
			resp, err := retry(ctx, request)
			if err != nil && errors.Is(err, lb.ErrNoEndpoints) {
				err = d.explain(err)
			}
			return resp, err
		}
	}
	return &Client{call: call, endpointer: endpointer, stop: d.stop}, nil
}

// Endpoint returns the client's TrimSpace endpoint: it takes a
// trimsvc.TrimRequest and answers with a transport.TrimResponse, whose
// Instance names the instance that answered.
func (c *Client) Endpoint() endpoint.Endpoint { return c.call }

// TrimSpace implements trimsvc.Service.
func (c *Client) TrimSpace(ctx context.Context, s string) (string, error) {
	return transport.Client{TrimSpaceEndpoint: c.call}.TrimSpace(ctx, s)
}

// Close stops discovery (a blocking Consul query in flight included) and
// closes every connection. It is safe to call more than once.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		if c.stop != nil {
			c.stop()
		}
		c.closeErr = c.endpointer.Close()
	})
	return c.closeErr
}

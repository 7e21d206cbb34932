package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/go-kit/kit/endpoint"
	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/log/level"

	"github.com/trimkit/trimkit/internal/consulname"
	"github.com/trimkit/trimkit/internal/pollsd"
	"github.com/trimkit/trimkit/sd"
)

// Client calls a service on the instances discovery reports, through the
// whole stack: an Endpointer with one gRPC connection per instance, a
// Balancer and Retry. Close it when done.
type Client struct {
	call       endpoint.Endpoint
	endpointer *Endpointer
	stop       func() // stops the discovery New started; nil otherwise

	closeOnce sync.Once
	closeErr  error
}

// New builds the whole stack over Consul: an sd.Instancer for the passing
// instances of cfg.Service with cfg.Tags (SRV records polled from
// Consul's DNS interface with DNS discovery), then what NewFromInstancer
// builds over it, with endpoints making each instance's endpoint from its
// connection. The clients of a
// process that watch the same service and tags through the same agent
// share one Consul watch (see sd.Instancers and WithInstancers); Close lets
// go of it, and the last Close stops it. A call that finds no instance fails with an error that
// says what was searched where (an *sd.NoInstancesError).
func New(cfg Config, endpoints EndpointFunc, opts ...Option) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("client config: %w", err)
	}
	o, err := newOptions(opts)
	if err != nil {
		return nil, fmt.Errorf("client options: %w", err)
	}
	instancer, loads, stop, err := discover(cfg, &o)
	if err != nil {
		return nil, err
	}
	c, err := build(instancer, cfg.Service, cfg.Tags, cfg.CallConfig, endpoints, o, loads)
	if err != nil {
		stop()
		return nil, err
	}
	c.stop = stop
	return c, nil
}

// discover starts what finds the instances of cfg (valid) for New and
// NewConn: an Instancer, Consul's shared watch or DNS, and, for the
// least-loaded balancer, the LoadWatcher of its reports (else nil). stop
// stops all of it.
func discover(cfg Config, o *options) (instancer kitsd.Instancer, loads *sd.LoadWatcher, stop func(), err error) {
	var (
		catalog *sd.Instancer // for load reports: the Consul watch, when there is one
		stops   []func()
	)
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	switch cfg.Discovery {
	case DiscoveryDNS:
		dns, err := pollsd.NewInstancer(cfg.DNSAddr, cfg.Service, cfg.Tags, 0, o.logger)
		if err != nil {
			return nil, nil, nil, err
		}
		instancer = dns
		stops = append(stops, dns.Stop)
	case DiscoveryQuery:
		q, closeIdle, err := queryInstancer(cfg, o)
		if err != nil {
			return nil, nil, nil, err
		}
		instancer = q
		stops = append(stops, closeIdle, q.Stop)
	}
	if cfg.banded() {
		src, err := watchDatacenters(cfg, o)
		if err != nil {
			return nil, nil, nil, err
		}
		instancer, catalog = src, src.listed[0]
		stops = append(stops, src.Stop)
		o.bandNames, o.overprovisioning = src.bandNames(), cmp.Or(cfg.Overprovisioning, defaultOverprovisioning)
	} else if len(cfg.Datacenters) == 1 {
		cfg.Consul.Datacenter = cfg.Datacenters[0]
	}
	// A Consul watch, shared with the process's other clients of the
	// service: to find the instances, or, with DNS discovery, to match the
	// load reports New watches to them.
	consulWatch := cfg.Discovery == "" || cfg.Discovery == DiscoveryConsul
	if o.bandNames == nil && (consulWatch || cfg.Balancer == LeastLoadedName) {
		watcher, err := o.instancers.Instancer(cfg.Consul, o.logger, cfg.Service, cfg.Tags, true, cfg.Read)
		if err != nil {
			stop()
			return nil, nil, nil, err
		}
		catalog = watcher
		stops = append(stops, watcher.Stop)
		if consulWatch {
			instancer = watcher
		}
	}
	if cfg.Balancer == LeastLoadedName {
		// Reports are matched to instances through the catalog: with DNS
		// discovery, a Consul watch of its own does that.
		consul, err := cfg.Consul.NewClient()
		if err != nil {
			stop()
			return nil, nil, nil, err
		}
		// Stops run last to first.
		stops = append(stops, closeIdleOf(consul))
		if loads, err = sd.NewLoadWatcher(consul, cfg.Service, catalog, o.logger); err != nil {
			stop()
			return nil, nil, nil, err
		}
		stops = append(stops, loads.Stop)
	}
	return instancer, loads, stop, nil
}

// queryInstancer polls the prepared query cfg.Query (else the one named
// like cfg.Service), through a Consul client of its own, whose idle
// connections closeIdle closes.
func queryInstancer(cfg Config, o *options) (q *pollsd.Instancer, closeIdle func(), err error) {
	consul, err := cfg.Consul.NewClient()
	if err != nil {
		return nil, nil, err
	}
	closeIdle = closeIdleOf(consul)
	exec, ok := consul.(interface {
		ExecuteQuery(ctx context.Context, name string) ([]string, string, int, error)
	})
	if !ok {
		closeIdle()
		return nil, nil, errors.New("client: this Consul client cannot run prepared queries")
	}
	where := "consul"
	if a, ok := consul.(interface{ Address() string }); ok {
		where = "consul at " + a.Address()
	}
	q, err = pollsd.NewQueryInstancer(cmp.Or(cfg.Query, cfg.Service), cfg.Service, where, exec.ExecuteQuery, 0, o.logger)
	if err != nil {
		closeIdle()
		return nil, nil, err
	}
	return q, closeIdle, nil
}

// closeIdleOf is what closes the idle connections of consul, a
// ConsulConfig.NewClient's: it pools them in a transport of its own, which
// nothing else would close.
func closeIdleOf(consul sd.Client) func() {
	if c, ok := consul.(interface{ CloseIdleConnections() }); ok {
		return c.CloseIdleConnections
	}
	return func() {}
}

// banded reports whether cfg (valid) calls for bands: several
// datacenters, the nearest ones, a locality or nearer nodes.
func (cfg Config) banded() bool {
	return len(cfg.Datacenters) > 1 || slices.Equal(cfg.Datacenters, []string{nearestDCs}) || cfg.Region != "" || cfg.Zone != "" || cfg.Near != ""
}

// watchDatacenters starts the watches of cfg.Service in each of
// cfg.Datacenters, two each (see dcSource), shared with the process's
// other clients.
func watchDatacenters(cfg Config, o *options) (*dcSource, error) {
	names := cfg.Datacenters
	if len(names) == 0 {
		names = []string{cfg.Consul.Datacenter} // "": the agent's own
	}
	var (
		// The agent's Consul client, of its own, for the datacenters'
		// order (_nearest) and the nodes' distances (Near).
		consul       sd.Client
		closeIdle    = func() {}
		nearestFirst = slices.Equal(names, []string{nearestDCs})
		nearest      func(context.Context) ([]string, error)
		distances    func(context.Context) (string, map[string]time.Duration, error)
	)
	if nearestFirst || cfg.Near != "" {
		agent := cfg.Consul
		agent.Datacenter = "" // coordinates are read from the agent's datacenter
		var err error
		if consul, err = agent.NewClient(); err != nil {
			return nil, err
		}
		closeIdle = closeIdleOf(consul)
	}
	if cfg.Near != "" {
		var err error
		if distances, err = nodeDistances(consul, cfg.Near); err != nil {
			closeIdle()
			return nil, err
		}
	}
	if nearestFirst {
		var err error
		if names, nearest, err = nearestDatacenters(consul); err != nil {
			closeIdle()
			return nil, err
		}
		if len(names) > maxBands {
			_ = level.Warn(o.logger).Log("msg", "more datacenters than a client takes; the nearest only", "datacenters", len(names), "taken", maxBands)
			names = names[:maxBands]
		}
	}
	var listed, all []*sd.Instancer
	stop := func() {
		for _, w := range append(listed, all...) {
			w.Stop()
		}
		closeIdle()
	}
	for _, dc := range names {
		in := cfg.Consul
		in.Datacenter = dc
		for _, passing := range []bool{true, false} {
			w, err := o.instancers.Instancer(in, o.logger, cfg.Service, cfg.Tags, passing, cfg.Read)
			if err != nil {
				stop()
				return nil, fmt.Errorf("watch %s in datacenter %s: %w", cfg.Service, dc, err)
			}
			if passing {
				listed = append(listed, w)
			} else {
				all = append(all, w)
			}
		}
	}
	src := newDCSource(names, listed, all, locality{region: cfg.Region, zone: cfg.Zone, near: cfg.Near != ""})
	src.closeIdle = closeIdle
	if nearest != nil {
		src.refreshOrder(nearest, o.logger)
	}
	if distances != nil {
		ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
		dc, dist, err := distances(ctx)
		cancel()
		switch {
		case err == nil:
			src.setDistances(dc, dist)
		case cfg.Near != consulname.NearAgent:
			src.Stop()
			return nil, fmt.Errorf("instances near node %s: %w", cfg.Near, err)
		default:
			// An agent that has just started has no coordinate yet.
			_ = level.Warn(o.logger).Log("msg", "could not read the nodes' distances yet; every instance counts as near until they are read again", "near", cfg.Near, "err", err, "again_in", nearestEvery)
		}
		src.refreshNear(distances, o.logger)
	}
	return src, nil
}

// nodeDistances returns what reads, through consul (the agent's), the
// distances from node near (Config.Near) to the nodes of the agent's
// datacenter.
func nodeDistances(consul sd.Client, near string) (func(context.Context) (string, map[string]time.Duration, error), error) {
	d, ok := consul.(interface {
		NodeDistances(ctx context.Context, near string) (string, map[string]time.Duration, error)
	})
	if !ok {
		return nil, errors.New("client: this Consul client cannot read network coordinates")
	}
	return func(ctx context.Context) (string, map[string]time.Duration, error) {
		return d.NodeDistances(ctx, near)
	}, nil
}

// nearestDatacenters reads, through consul (the agent's), the datacenters
// its servers know, nearest first, and returns them with what reads them
// again.
func nearestDatacenters(consul sd.Client) (names []string, again func(context.Context) ([]string, error), err error) {
	byDistance, ok := consul.(interface {
		DatacentersByDistance(ctx context.Context) ([]string, error)
	})
	if !ok {
		return nil, nil, errors.New("client: this Consul client cannot list datacenters")
	}
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	if names, err = byDistance.DatacentersByDistance(ctx); err == nil && len(names) == 0 {
		err = errors.New("consul knows none")
	}
	if err != nil {
		return nil, nil, fmt.Errorf("datacenters nearest first (%s): %w", nearestDCs, err)
	}
	return names, byDistance.DatacentersByDistance, nil
}

// NewFromInstancer builds the stack over any go-kit Instancer
// (sd.FixedInstancer, a program's own discovery): an Endpointer with one
// gRPC connection per instance (Factory with endpoints), the balancer cfg
// names, and Retry as cfg says. Close does not stop instancer: the caller
// owns it.
func NewFromInstancer(instancer kitsd.Instancer, cfg CallConfig, endpoints EndpointFunc, opts ...Option) (*Client, error) {
	if instancer == nil {
		return nil, errors.New("client: NewFromInstancer needs an instancer")
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("client config: %w", err)
	}
	o, err := newOptions(opts)
	if err != nil {
		return nil, fmt.Errorf("client options: %w", err)
	}
	return build(instancer, "", nil, cfg, endpoints, o, nil)
}

// build builds the stack over instancer, the discovery of service with
// tags ("" and nil for an Instancer of the caller's), with loads for the
// least-loaded balancer (nil without Consul); cfg and o are valid.
func build(instancer kitsd.Instancer, service string, tags []string, cfg CallConfig, endpoints EndpointFunc, o options, loads *sd.LoadWatcher) (*Client, error) {
	if endpoints == nil {
		return nil, errors.New("client: an EndpointFunc is needed to call the instances")
	}
	p, err := callParts(cfg)
	if err != nil {
		return nil, err
	}
	if p.newBalancer, err = balancerFor(cfg.Balancer, loads); err != nil {
		return nil, err
	}
	base := Factory(endpoints, p.dialOptions(o)...)
	hint := plaintextHint
	if cfg.TLS.CAFile != "" {
		hint = func(e endpoint.Endpoint) endpoint.Endpoint { return refusedHint(e, cfg.TLS.CertFile) }
	}
	factory := func(instance string) (endpoint.Endpoint, io.Closer, error) {
		e, closer, err := base(instance)
		if err != nil {
			return nil, nil, err
		}
		return hint(e), closer, nil
	}
	p.endpointer.view.service, p.endpointer.view.tags, p.endpointer.view.watch = service, tags, instancer
	p.endpointer.bandNames, p.endpointer.overprovisioning = o.bandNames, o.overprovisioning
	endpointer := newEndpointer(instancer, factory, o.logger, p.endpointer)
	return &Client{call: newRetry(p.newBalancer(endpointer), p.retry, endpointAttempt).call, endpointer: endpointer}, nil
}

// balancerFor returns how to build the balancer CallConfig.Balancer names,
// or why it cannot be built: checked before an Endpointer connects
// anywhere.
func balancerFor(name string, loads *sd.LoadWatcher) (func(*Endpointer) Balancer, error) {
	switch name {
	case RoundRobinName, "":
		return func(e *Endpointer) Balancer { return NewRoundRobin(e) }, nil
	case P2CName:
		return func(e *Endpointer) Balancer { return NewP2C(e) }, nil
	case LeastLoadedName:
		if loads == nil {
			return nil, errors.New("the least-loaded balancer needs the load reports in Consul: build the client with New or NewConn, or build the stack by hand with NewLeastLoaded over an sd.LoadWatcher")
		}
		return func(e *Endpointer) Balancer { return NewLeastLoaded(e, loads) }, nil
	}
	return nil, fmt.Errorf("unknown balancer %q", name)
}

// Endpoint returns the client's endpoint: it takes the requests the
// EndpointFunc's endpoints take and answers as they do, through Retry.
func (c *Client) Endpoint() endpoint.Endpoint { return c.call }

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

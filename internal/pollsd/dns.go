package pollsd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/dnssrv"
	"github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"

	"github.com/trimkit/trimkit/internal/consulname"
	"github.com/trimkit/trimkit/internal/defaults"
	"github.com/trimkit/trimkit/sd"
)

const (
	// Refresh is how often an Instancer asks again. Consul's DNS answers
	// carry a TTL of 0 by default and DNS cannot block, so polling is the
	// only freshness there is: a change is seen within a second (a
	// blocking query sees it in milliseconds).
	Refresh = time.Second
	// dnsTimeout bounds one round of lookups.
	dnsTimeout = 2 * time.Second
)

// Instancer polls for the instances of a service: it implements go-kit's
// sd.Instancer as go-kit's sd/dnssrv Instancer does, over a lookup of this
// package's (DNS SRV records, or a prepared query's answer); unlike
// dnssrv's, its Stop waits for a lookup in flight, and may be called more
// than once.
type Instancer struct {
	*dnssrv.Instancer
	cancel  context.CancelFunc
	lastErr atomic.Pointer[error]
	// explain is NoInstances, given the last lookup's error.
	explain func(lastErr error) error

	mu      sync.Mutex
	stopped bool           // no lookup starts once set
	lookups sync.WaitGroup // lookups in flight; added to under mu, before stopped
}

var _ kitsd.Instancer = (*Instancer)(nil)

// newInstancer polls lookup for name every refresh (0 for Refresh).
func newInstancer(name string, refresh time.Duration, logger log.Logger, lookup func(ctx context.Context, name string) ([]*net.SRV, error), explain func(error) error) *Instancer {
	if refresh <= 0 {
		refresh = Refresh
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Instancer{cancel: cancel, explain: explain}
	poll := func(_, _, name string) (string, []*net.SRV, error) {
		// dnssrv's goroutine may still take a tick after its Stop: a lookup
		// starts only before Stop, so that Stop's Wait never races an Add.
		d.mu.Lock()
		if d.stopped {
			d.mu.Unlock()
			return "", nil, errStopped
		}
		d.lookups.Add(1)
		d.mu.Unlock()
		defer d.lookups.Done()
		srvs, err := lookup(ctx, name)
		d.lastErr.Store(&err)
		return name, srvs, err
	}
	d.Instancer = dnssrv.NewInstancerDetailed(name, time.NewTicker(refresh), poll, logger)
	return d
}

// NewInstancer watches service (with at most one tag: Consul's DNS
// names take one) through the DNS server at dnsAddr ("" for
// defaults.DNSAddr), every refresh (0 for Refresh): the SRV records of
// <name>.service.consul (or <tag>.<name>.service.consul), each target
// resolved to an address through the same DNS server, as callers that
// cannot use the HTTP API do. Consul answers with passing (and warning)
// instances only.
func NewInstancer(dnsAddr, service string, tags []string, refresh time.Duration, logger log.Logger) (*Instancer, error) {
	if logger == nil {
		return nil, errors.New("pollsd: NewInstancer needs a logger")
	}
	if err := consulname.ValidServiceName(service); err != nil {
		return nil, err
	}
	if len(tags) > 1 {
		return nil, fmt.Errorf("consul DNS names take one tag, not %d: %q", len(tags), tags)
	}
	if dnsAddr == "" {
		dnsAddr = defaults.DNSAddr
	}
	if _, _, err := net.SplitHostPort(dnsAddr); err != nil {
		return nil, fmt.Errorf("DNS address %q: %w", dnsAddr, err)
	}
	name := service + ".service.consul."
	if len(tags) == 1 {
		name = tags[0] + "." + name
	}
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var dialer net.Dialer
		return dialer.DialContext(ctx, network, dnsAddr)
	}}
	lookup := func(ctx context.Context, name string) ([]*net.SRV, error) { return lookupSRV(ctx, r, name, dnsAddr) }
	tags = slices.Clone(tags)
	explain := func(err error) error {
		return &sd.NoInstancesError{Service: service, Tags: tags, Where: "consul's DNS interface at " + dnsAddr, Discovery: err, Err: lb.ErrNoEndpoints}
	}
	return newInstancer(name, refresh, log.With(logger, "dns", dnsAddr), lookup, explain), nil
}

// Err is the last lookup's error, nil when it succeeded.
func (d *Instancer) Err() error {
	if err := d.lastErr.Load(); err != nil {
		return *err
	}
	return nil
}

var errStopped = errors.New("instancer stopped")

// Stop stops the polling, cancels a lookup in flight and waits for it. It
// is safe to call more than once.
func (d *Instancer) Stop() {
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return
	}
	d.stopped = true
	d.mu.Unlock()
	d.cancel()
	d.Instancer.Stop()
	d.lookups.Wait()
}

// NoInstances explains a call that found no instance: a
// *sd.NoInstancesError naming the service and where it was looked for,
// and the last lookup's error. It wraps lb.ErrNoEndpoints.
func (d *Instancer) NoInstances() error { return d.explain(d.Err()) }

// lookupSRV asks for name's SRV records and resolves each target through
// the same server. No such name is no instance, not an error: Consul
// answers NXDOMAIN for a service without passing instances.
func lookupSRV(ctx context.Context, r *net.Resolver, name, dnsAddr string) ([]*net.SRV, error) {
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	ctx, cancel := context.WithTimeout(ctx, dnsTimeout)
	defer cancel()
	_, srvs, err := r.LookupSRV(ctx, "", "", name)
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("DNS SRV %s at %s: %w", name, dnsAddr, err)
	}
	// Instances on one host share a target (Consul's <hex-ip>.addr.<dc>.consul
	// for a service with an address): one lookup a target.
	resolved := map[string]string{}
	for _, srv := range srvs {
		if net.ParseIP(strings.TrimSuffix(srv.Target, ".")) != nil {
			continue
		}
		addr, ok := resolved[srv.Target]
		if !ok {
			addrs, err := r.LookupHost(ctx, srv.Target)
			if err != nil || len(addrs) == 0 {
				return nil, fmt.Errorf("DNS %s (target of %s) at %s: %v", srv.Target, name, dnsAddr, err)
			}
			addr = addrs[0]
			resolved[srv.Target] = addr
		}
		srv.Target = addr
	}
	return srvs, nil
}

package dnssd

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

// Instancer finds the instances of a service through a Consul agent's
// DNS interface, as callers that cannot use the HTTP API do: go-kit's
// sd/dnssrv Instancer polling the SRV records of <name>.service.consul (or
// <tag>.<name>.service.consul), each target resolved to an address through
// the same DNS server. Consul answers with passing (and warning) instances
// only. It implements go-kit's sd.Instancer; unlike dnssrv's, its Stop
// waits for a lookup in flight, and may be called more than once.
type Instancer struct {
	*dnssrv.Instancer
	cancel  context.CancelFunc
	lastErr atomic.Pointer[error]

	service, dnsAddr string
	tags             []string

	mu      sync.Mutex
	stopped bool           // no lookup starts once set
	lookups sync.WaitGroup // lookups in flight; added to under mu, before stopped
}

var _ kitsd.Instancer = (*Instancer)(nil)

// NewInstancer watches service (with at most one tag: Consul's DNS
// names take one) through the DNS server at dnsAddr ("" for
// defaults.DNSAddr), every refresh (0 for Refresh).
func NewInstancer(dnsAddr, service string, tags []string, refresh time.Duration, logger log.Logger) (*Instancer, error) {
	if logger == nil {
		return nil, errors.New("dnssd: NewInstancer needs a logger")
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
	if refresh <= 0 {
		refresh = Refresh
	}
	name := service + ".service.consul."
	if len(tags) == 1 {
		name = tags[0] + "." + name
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Instancer{cancel: cancel, service: service, tags: slices.Clone(tags), dnsAddr: dnsAddr}
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var dialer net.Dialer
		return dialer.DialContext(ctx, network, dnsAddr)
	}}
	lookup := func(_, _, name string) (string, []*net.SRV, error) {
		// dnssrv's goroutine may still take a tick after its Stop: a lookup
		// starts only before Stop, so that Stop's Wait never races an Add.
		d.mu.Lock()
		if d.stopped {
			d.mu.Unlock()
			return "", nil, errDNSStopped
		}
		d.lookups.Add(1)
		d.mu.Unlock()
		defer d.lookups.Done()
		cname, srvs, err := lookupSRV(ctx, r, name, dnsAddr)
		d.lastErr.Store(&err)
		return cname, srvs, err
	}
	d.Instancer = dnssrv.NewInstancerDetailed(name, time.NewTicker(refresh), lookup, log.With(logger, "dns", dnsAddr))
	return d, nil
}

// Err is the last lookup's error, nil when it succeeded.
func (d *Instancer) Err() error {
	if err := d.lastErr.Load(); err != nil {
		return *err
	}
	return nil
}

var errDNSStopped = errors.New("DNS instancer stopped")

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

// lookupSRV asks for name's SRV records and resolves each target through
// the same server. No such name is no instance, not an error: Consul
// answers NXDOMAIN for a service without passing instances.
func lookupSRV(ctx context.Context, r *net.Resolver, name, dnsAddr string) (string, []*net.SRV, error) {
	if ctx.Err() != nil {
		return "", nil, ctx.Err()
	}
	ctx, cancel := context.WithTimeout(ctx, dnsTimeout)
	defer cancel()
	cname, srvs, err := r.LookupSRV(ctx, "", "", name)
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return cname, nil, nil
	}
	if err != nil {
		return "", nil, fmt.Errorf("DNS SRV %s at %s: %w", name, dnsAddr, err)
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
				return "", nil, fmt.Errorf("DNS %s (target of %s) at %s: %v", srv.Target, name, dnsAddr, err)
			}
			addr = addrs[0]
			resolved[srv.Target] = addr
		}
		srv.Target = addr
	}
	return cname, srvs, nil
}

// NoInstances explains a call that found no instance: a
// *NoInstancesError naming the service, its tag, the DNS server and the
// last lookup's error. It wraps lb.ErrNoEndpoints.
func (d *Instancer) NoInstances() error {
	return &sd.NoInstancesError{Service: d.service, Tags: d.tags, Where: "consul's DNS interface at " + d.dnsAddr, Discovery: d.Err(), Err: lb.ErrNoEndpoints}
}

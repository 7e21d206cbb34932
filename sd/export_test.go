package sd

import (
	"context"
	"errors"
	"time"

	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"
)

// NewLoadWatcherWithClock is NewLoadWatcher judging freshness by now, for
// tests.
func NewLoadWatcherWithClock(client Client, service string, catalog CatalogMap, logger log.Logger, now func() time.Time) *LoadWatcher {
	w, err := newLoadWatcher(client, service, catalog, logger, now)
	if err != nil {
		panic(err) // a test's own mistake
	}
	return w
}

// Bounds and defaults the tests of sd_test read.
const (
	MaxLoadSkew     = maxLoadSkew
	MaxLoadInterval = maxLoadInterval
	MaxLoad         = maxLoad
	DefaultMaxStale = defaultMaxStale

	DefaultCheckInterval   = defaultCheckInterval
	DefaultDeregisterAfter = defaultDeregisterAfter
)

// WithDefaults is withDefaults.
func (r Registration) WithDefaults() Registration { return r.withDefaults() }

// IsUnreachable reports whether err is an *UnreachableError.
func IsUnreachable(err error) bool {
	var u *UnreachableError
	return errors.As(err, &u)
}

// NewAPIClient is newAPIClient, for the tests that look at the API client
// and the address it reaches.
func (c ConsulConfig) NewAPIClient() (*api.Client, *api.Config, string, error) {
	return c.newAPIClient()
}

// ErrSessionGone is what a client's RenewSession says of a session that
// no longer exists.
var ErrSessionGone = errSessionGone

// Errors and options the tests of sd_test build.
type (
	FilteredError   = filteredError
	PermissionError = permissionError
)

// InstancerOption changes how NewInstancerWith's Instancer queries
// Consul: what Instancers.Instancer sets, for the tests that use a fake
// client.
type InstancerOption func(*watchOptions)

// WithRead sets how the Instancer reads the catalog.
func WithRead(r Read) InstancerOption { return func(o *watchOptions) { o.read = r } }

// QueryRate limits the Instancer's queries to rate a second, in bursts of
// burst.
func QueryRate(rate float64, burst int) InstancerOption {
	return func(o *watchOptions) { o.rate, o.burst = rate, max(burst, 1) }
}

// NewInstancerWith is NewInstancer with opts.
func NewInstancerWith(client Client, logger log.Logger, service string, tags []string, passingOnly bool, opts ...InstancerOption) (*Instancer, error) {
	o := newWatchOptions()
	for _, opt := range opts {
		opt(&o)
	}
	return newInstancer(client, logger, service, tags, passingOnly, o)
}

// State returns the instances known last and the error of the last query,
// nil when it succeeded.
func (s *Instancer) State() kitsd.Event { return s.w.current() }

// Permanent is permanent: whether err is one retrying cannot cure.
var Permanent = permanent

// ErrNoLeader is what a query's error wraps when Consul has no leader.
var ErrNoLeader = errNoLeader

// NewLoadWatcherOf is NewLoadWatcher over a fixed catalog, for tests.
func NewLoadWatcherOf(client Client, service string, catalog CatalogMap, logger log.Logger) (*LoadWatcher, error) {
	return newLoadWatcher(client, service, catalog, logger, time.Now)
}

// CatalogMap is a fixed catalog: service IDs by address.
type CatalogMap map[string]string

func (m CatalogMap) serviceID(addr string) (string, bool) {
	id, ok := m[addr]
	return id, ok && id != ""
}

// HostPort is where to call the instance: Address and Port, joined.
func (e Entry) HostPort() string { return e.hostPort() }

// Registered reports whether the local agent holds the instance.
func (r *Registrar) Registered(ctx context.Context) (bool, error) { return r.isRegistered(ctx) }

// Len is the number of watches running.
func (p *Instancers) Len() int { return p.len() }

// SameWatch reports whether a and b share one watch.
func SameWatch(a, b *Instancer) bool { return a.w == b.w }

// ServiceIDOf is s's service ID of the instance at addr.
func ServiceIDOf(s *Instancer, addr string) (string, bool) { return s.serviceID(addr) }

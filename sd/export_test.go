package sd

import (
	"context"
	"errors"
	"time"

	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"
)

// NewLoadWatcherWithClock is NewLoadWatcher judging freshness by now, for
// tests.
func NewLoadWatcherWithClock(client Client, service string, catalog Catalog, logger log.Logger, now func() time.Time) *LoadWatcher {
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
)

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

var QueryRate = queryRate

// CatalogMap is a fixed Catalog: service IDs by address.
type CatalogMap map[string]string

// ServiceID implements Catalog.
func (m CatalogMap) ServiceID(addr string) (string, bool) {
	id, ok := m[addr]
	return id, ok && id != ""
}

// HostPort is where to call the instance: Address and Port, joined.
func (e Entry) HostPort() string { return e.hostPort() }

// Registered reports whether the local agent holds the instance.
func (r *Registrar) Registered(ctx context.Context) (bool, error) { return r.isRegistered(ctx) }

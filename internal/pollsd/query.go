package pollsd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/trimkit/trimkit/sd"
)

// Execute runs a prepared query: its instances, host:port; the datacenter
// that answered, and how many datacenters it failed over to.
type Execute func(ctx context.Context, query string) (instances []string, datacenter string, failovers int, err error)

// NewQueryInstancer finds the instances of service by running the
// prepared query query with execute every refresh (0 for Refresh):
// prepared queries do not block, so polling is the only freshness there
// is. where says what answers (the agent), for errors. Whatever the query
// says goes: its service, tags, and its failover to other datacenters,
// which Consul runs; the datacenter that answered is logged when it
// changes.
func NewQueryInstancer(query, service, where string, execute Execute, refresh time.Duration, logger log.Logger) (*Instancer, error) {
	switch {
	case logger == nil:
		return nil, errors.New("pollsd: NewQueryInstancer needs a logger")
	case query == "":
		return nil, errors.New("pollsd: NewQueryInstancer needs a prepared query's name or ID")
	case execute == nil:
		return nil, errors.New("pollsd: NewQueryInstancer needs a way to execute the query")
	}
	var (
		mu       sync.Mutex
		answered string // the datacenter of the last answer
	)
	logger = log.With(logger, "prepared_query", query)
	lookup := func(ctx context.Context, _ string) ([]*net.SRV, error) {
		ctx, cancel := context.WithTimeout(ctx, dnsTimeout)
		defer cancel()
		instances, dc, failovers, err := execute(ctx, query)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		if dc != answered {
			msg := "prepared query answered"
			if answered != "" {
				msg = "prepared query answered by another datacenter"
			}
			answered = dc
			_ = level.Info(logger).Log("msg", msg, "datacenter", dc, "failovers", failovers, "instances", len(instances))
		}
		mu.Unlock()
		srvs := make([]*net.SRV, 0, len(instances))
		for _, inst := range instances {
			host, port, err := net.SplitHostPort(inst)
			if err != nil {
				return nil, fmt.Errorf("prepared query %s: instance %q: %w", query, inst, err)
			}
			p, err := strconv.ParseUint(port, 10, 16)
			if err != nil {
				return nil, fmt.Errorf("prepared query %s: instance %q: %w", query, inst, err)
			}
			srvs = append(srvs, &net.SRV{Target: host, Port: uint16(p)})
		}
		return srvs, nil
	}
	explain := func(err error) error {
		return &sd.NoInstancesError{Service: service, Where: fmt.Sprintf("prepared query %q through %s", query, where), Discovery: err, Err: lb.ErrNoEndpoints}
	}
	return newInstancer(query, refresh, logger, lookup, explain), nil
}

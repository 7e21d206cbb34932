package client

import (
	"sync/atomic"

	"github.com/go-kit/kit/endpoint"
	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"
)

// AttemptBalancer is a Balancer that Retry can ask for the endpoint of each
// attempt of one call, so that the attempts go to distinct endpoints even
// while other calls use the balancer concurrently. Without it, a retry after
// a failure can land on the failed instance again.
type AttemptBalancer interface {
	lb.Balancer
	// Start begins a call and returns its starting point.
	Start() uint64
	// Attempt returns the endpoint for attempt (0 for the first) of the call
	// that Start returned start for.
	Attempt(start uint64, attempt int) (endpoint.Endpoint, error)
}

// RoundRobin is go-kit's round-robin balancer made an AttemptBalancer: calls
// start on successive endpoints, and each retry of a call moves on to the
// next endpoint after the one its previous attempt used.
type RoundRobin struct {
	endpointer kitsd.Endpointer
	counter    atomic.Uint64
}

var _ AttemptBalancer = (*RoundRobin)(nil)

// NewRoundRobin balances over the endpoints of e.
func NewRoundRobin(e kitsd.Endpointer) *RoundRobin {
	if e == nil {
		panic("client: NewRoundRobin needs an endpointer")
	}
	return &RoundRobin{endpointer: e}
}

// Endpoint implements lb.Balancer.
func (rr *RoundRobin) Endpoint() (endpoint.Endpoint, error) { return rr.Attempt(rr.Start(), 0) }

// Start implements AttemptBalancer.
func (rr *RoundRobin) Start() uint64 { return rr.counter.Add(1) - 1 }

// Attempt implements AttemptBalancer.
func (rr *RoundRobin) Attempt(start uint64, attempt int) (endpoint.Endpoint, error) {
	endpoints, err := rr.endpointer.Endpoints()
	if err != nil {
		return nil, err
	}
	if len(endpoints) == 0 {
		return nil, lb.ErrNoEndpoints
	}
	return endpoints[(start+uint64(attempt))%uint64(len(endpoints))], nil
}

package client

import (
	"slices"
	"sync/atomic"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd/lb"
)

// Balancer picks an instance of an Endpointer for each call. It implements
// go-kit's lb.Balancer; Retry also asks it, for each retry of a call, for an
// instance that the call has not tried yet, so that a retry does not land
// on the instance that just failed while other calls use the balancer
// concurrently.
type Balancer struct {
	endpointer *Endpointer
	counter    atomic.Uint64
}

var _ lb.Balancer = (*Balancer)(nil)

// NewRoundRobin balances over the instances of e in turn: calls start on
// successive instances, and each retry of a call moves on to the next
// instance it has not tried.
func NewRoundRobin(e *Endpointer) *Balancer {
	if e == nil {
		panic("client: NewRoundRobin needs an endpointer")
	}
	return &Balancer{endpointer: e}
}

// Endpoint implements lb.Balancer.
func (b *Balancer) Endpoint() (endpoint.Endpoint, error) {
	n, err := b.pick(b.next(), nil)
	if err != nil {
		return nil, err
	}
	return n.e, nil
}

// next numbers a new call.
func (b *Balancer) next() uint64 { return b.counter.Add(1) - 1 }

// pick returns the instance for the next attempt of call seq, which has
// tried the nodes in tried: the first instance it has not tried, counting
// from its starting point plus its attempts so far; when it has tried them
// all, it goes round again.
func (b *Balancer) pick(seq uint64, tried []*node) (*node, error) {
	nodes := b.endpointer.snapshot().nodes
	n := uint64(len(nodes))
	if n == 0 {
		return nil, lb.ErrNoEndpoints
	}
	start := seq + uint64(len(tried))
	for i := range n {
		if nd := nodes[(start+i)%n]; !slices.Contains(tried, nd) {
			return nd, nil
		}
	}
	return nodes[start%n], nil
}

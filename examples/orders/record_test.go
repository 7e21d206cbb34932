package orders_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/go-kit/kit/endpoint"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/examples/orders/orderspb"
)

// results are what the calls of the load got: written under mu while the
// load runs, read once it is over.
type results struct {
	mu       sync.Mutex
	creates  map[string]created // by request_id
	created  []string           // IDs of the orders created, for the gets
	gets     int
	found    int
	notFound int
	getErrs  []error
	answers  []answer
}

type created struct {
	order *orderspb.Order
	err   error
	at    time.Time // when the call started
	done  time.Time // when it returned
}

type answer struct {
	instance string
	at       time.Time
}

// call makes the i-th call of the load: a CreateOrder for even i, else a
// GetOrder of an order created before (or of none yet).
func (r *results) call(e endpoint.Endpoint, i int) {
	ctx := context.Background()
	at := time.Now()
	if i%2 == 0 {
		id := fmt.Sprintf("req-%d", i)
		resp, err := e(ctx, &orderspb.CreateOrderRequest{RequestId: id, Item: "widget", Quantity: int32(i%7 + 1)})
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.creates == nil {
			r.creates = map[string]created{}
		}
		res := created{err: err, at: at, done: time.Now()}
		if err == nil {
			res.order = resp.(*orderspb.Order)
			r.created = append(r.created, res.order.GetId())
			r.answers = append(r.answers, answer{res.order.GetInstance(), at})
		}
		r.creates[id] = res
		return
	}
	r.mu.Lock()
	id := "none-yet"
	if len(r.created) > 0 {
		id = r.created[rand.IntN(len(r.created))]
	}
	r.mu.Unlock()
	resp, err := e(ctx, &orderspb.GetOrderRequest{Id: id})
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gets++
	switch {
	case err == nil:
		r.found++
		r.answers = append(r.answers, answer{resp.(*orderspb.Order).GetInstance(), at})
	case status.Code(err) == codes.NotFound:
		r.notFound++ // the instance's answer: it keeps only its own orders
	default:
		r.getErrs = append(r.getErrs, err)
	}
}

// answeredBy is the number of calls started after after that instance
// answered with an order.
func (r *results) answeredBy(instance string, after time.Time) int {
	n := 0
	for _, a := range r.answers {
		if a.instance == instance && !a.at.Before(after) {
			n++
		}
	}
	return n
}

// attemptError is an attempt's error with the address of the instance it
// went to.
type attemptError struct {
	addr string
	err  error
}

func (e *attemptError) Error() string { return e.addr + ": " + e.err.Error() }
func (e *attemptError) Unwrap() error { return e.err }

// attempts counts the attempts the client stack makes, as its
// EndpointFunc sees them.
type attempts struct {
	mu      sync.Mutex
	creates map[string]int // by request_id
	gets    int
	by      map[string]int // by instance address
	failed  map[string]int // by instance address, NotFound (an answer) excepted
}

// tagged wraps endpoints so that each attempt is counted and its error
// names its instance.
func (a *attempts) tagged(endpoints client.EndpointFunc) client.EndpointFunc {
	return func(conn *grpc.ClientConn) endpoint.Endpoint {
		e, addr := endpoints(conn), conn.Target()
		return func(ctx context.Context, request any) (any, error) {
			resp, err := e(ctx, request)
			a.mu.Lock()
			defer a.mu.Unlock()
			if a.creates == nil {
				a.creates, a.by, a.failed = map[string]int{}, map[string]int{}, map[string]int{}
			}
			a.by[addr]++
			switch req := request.(type) {
			case *orderspb.CreateOrderRequest:
				a.creates[req.GetRequestId()]++
			case *orderspb.GetOrderRequest:
				a.gets++
			}
			if err != nil {
				if status.Code(err) != codes.NotFound {
					a.failed[addr]++
				}
				return nil, &attemptError{addr: addr, err: err}
			}
			return resp, nil
		}
	}
}

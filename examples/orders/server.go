package orders

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/examples/orders/orderspb"
	"github.com/trimkit/trimkit/transport/grpcserver"
)

// Server is the orders service of one instance: its orders live in memory,
// so an order is found only on the instance that created it.
type Server struct {
	orderspb.UnimplementedOrdersServer

	// Set by NewServer, read-only after.
	instance string
	ledger   *os.File // nil without a ledger

	mu       sync.Mutex
	orders   map[string]*orderspb.Order // guarded by mu; each never changes once stored
	watchers map[*watcher]bool          // guarded by mu
}

// watcher is one WatchOrders stream: the orders it is yet to send.
type watcher struct {
	item   string
	orders chan *orderspb.Order
	behind chan struct{} // closed when orders was full: the stream ends
}

// watchBuffer is how many orders a watcher may be behind before its
// stream ends (ResourceExhausted): an order is never dropped silently.
const watchBuffer = 256

var _ orderspb.OrdersServer = (*Server)(nil)

// NewServer returns the service of the instance whose service ID is
// instance (every Order it answers names it). With a ledger path, each
// CreateOrder appends its request_id and a newline to that file, created
// if need be, before it answers: a record of every request that reached
// the instance, which outlives it, even killed. Close the Server when done.
func NewServer(instance, ledger string) (*Server, error) {
	s := &Server{instance: instance, orders: map[string]*orderspb.Order{}, watchers: map[*watcher]bool{}}
	if ledger != "" {
		f, err := os.OpenFile(ledger, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("ledger: %w", err)
		}
		s.ledger = f
	}
	return s, nil
}

// Close closes the ledger.
func (s *Server) Close() error {
	if s.ledger == nil {
		return nil
	}
	return s.ledger.Close()
}

// GetOrder returns the order with the request's id, or NotFound.
func (s *Server) GetOrder(_ context.Context, req *orderspb.GetOrderRequest) (*orderspb.Order, error) {
	if req.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "id is empty")
	}
	s.mu.Lock()
	o, ok := s.orders[req.GetId()]
	s.mu.Unlock()
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no order %q on %s", req.GetId(), s.instance)
	}
	return o, nil
}

// CreateOrder creates a new order, whatever orders came before with the
// same request_id: it is not idempotent, and does not pretend to be.
func (s *Server) CreateOrder(_ context.Context, req *orderspb.CreateOrderRequest) (*orderspb.Order, error) {
	switch {
	case req.GetItem() == "":
		return nil, status.Error(codes.InvalidArgument, "item is empty")
	case req.GetQuantity() < 1:
		return nil, status.Errorf(codes.InvalidArgument, "quantity %d: must be at least 1", req.GetQuantity())
	case strings.ContainsAny(req.GetRequestId(), "\r\n"):
		return nil, status.Error(codes.InvalidArgument, "request_id holds a line break")
	}
	if s.ledger != nil {
		// One write of a whole line to a file opened with O_APPEND: lines
		// of concurrent calls never interleave, and a line is in the file
		// (the kernel's) before the caller can hear of its order, so a
		// SIGKILL cannot lose a request that was answered.
		if _, err := s.ledger.WriteString(req.GetRequestId() + "\n"); err != nil {
			return nil, status.Errorf(codes.Internal, "ledger: %v", err)
		}
	}
	o := &orderspb.Order{Id: rand.Text(), Item: req.GetItem(), Quantity: req.GetQuantity(), Instance: s.instance}
	s.mu.Lock()
	s.orders[o.GetId()] = o
	for w := range s.watchers {
		if w.item != "" && w.item != o.GetItem() {
			continue
		}
		select {
		case w.orders <- o:
		default: // behind: its stream ends, and it leaves the set
			close(w.behind)
			delete(s.watchers, w)
		}
	}
	s.mu.Unlock()
	return o, nil
}

// WatchOrders sends the orders the instance creates from now on, until
// the caller cancels or the server stops: when its instance begins to stop
// (grpcserver.Leaving), the stream ends OK, so that its caller opens it
// again on another instance. A caller more than watchBuffer orders behind
// gets ResourceExhausted.
func (s *Server) WatchOrders(req *orderspb.WatchOrdersRequest, stream orderspb.Orders_WatchOrdersServer) error {
	ctx := stream.Context()
	w := &watcher{item: req.GetItem(), orders: make(chan *orderspb.Order, watchBuffer), behind: make(chan struct{})}
	s.mu.Lock()
	s.watchers[w] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.watchers, w)
		s.mu.Unlock()
	}()
	// The header at once: the caller knows its stream is open here
	// before the first order comes.
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	leaving := grpcserver.Leaving(ctx)
	for {
		select {
		case o := <-w.orders:
			if err := stream.Send(o); err != nil {
				return err
			}
		case <-w.behind:
			return status.Errorf(codes.ResourceExhausted, "the watch fell %d orders behind", watchBuffer)
		case <-leaving:
			return nil
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

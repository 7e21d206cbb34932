package bench

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-kit/kit/endpoint"
	kitsd "github.com/go-kit/kit/sd"
	"google.golang.org/grpc"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/examples/orders"
	"github.com/trimkit/trimkit/examples/orders/orderspb"
)

// ordersFleet is three in-process servers of examples/orders, a service
// that is not trim, each holding one order: a GetOrder of it is the call
// the orders rows make, through raw gRPC and through the generic client
// stack, to show what being generic costs.
type ordersFleet struct {
	addrs []string
	ids   map[string]string // address -> the id of the order it holds
}

var (
	ordersOnce sync.Once
	fleet      ordersFleet
)

// startOrders starts the fleet once per test binary; its servers live as
// long as the binary (the benchmarks share them).
func startOrders(tb testing.TB) ordersFleet {
	ordersOnce.Do(func() {
		fleet.ids = map[string]string{}
		for range 3 {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				tb.Fatal(err)
			}
			svc, err := orders.NewServer(lis.Addr().String(), "")
			if err != nil {
				tb.Fatal(err)
			}
			s := grpc.NewServer()
			orderspb.RegisterOrdersServer(s, svc)
			go s.Serve(lis)
			addr := lis.Addr().String()
			o, err := svc.CreateOrder(context.Background(), &orderspb.CreateOrderRequest{RequestId: "bench", Item: "widget", Quantity: 1})
			if err != nil {
				tb.Fatal(err)
			}
			fleet.addrs = append(fleet.addrs, addr)
			fleet.ids[addr] = o.GetId()
		}
	})
	return fleet
}

// rawThreeConnOrders is raw-3conn for the orders service: round robin over
// one connection per server, no stack.
func rawThreeConnOrders(tb testing.TB, _ []string) caller {
	f := startOrders(tb)
	type target struct {
		stub orderspb.OrdersClient
		req  *orderspb.GetOrderRequest
	}
	var targets []target
	for _, a := range f.addrs {
		targets = append(targets, target{orderspb.NewOrdersClient(dial(tb, a)), &orderspb.GetOrderRequest{Id: f.ids[a]}})
	}
	var n atomic.Uint64
	return func(ctx context.Context) error {
		t := targets[n.Add(1)%uint64(len(targets))]
		_, err := t.stub.GetOrder(ctx, t.req)
		return err
	}
}

// genericFixedOrders is trimkit-fixed for the orders service: the generic
// stack (client.NewFromInstancer) with an EndpointFunc over the generated
// client, as examples/orders does. The endpoint asks each server for the
// order it holds.
func genericFixedOrders(tb testing.TB, _ []string) caller {
	f := startOrders(tb)
	endpoints := func(conn *grpc.ClientConn) endpoint.Endpoint {
		stub := orderspb.NewOrdersClient(conn)
		req := &orderspb.GetOrderRequest{Id: f.ids[conn.Target()]}
		return func(ctx context.Context, _ any) (any, error) { return stub.GetOrder(ctx, req) }
	}
	c, err := client.NewFromInstancer(kitsd.FixedInstancer(f.addrs), client.CallConfig{}, endpoints)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	e := c.Endpoint()
	req := &orderspb.GetOrderRequest{}
	return func(ctx context.Context) error {
		_, err := e(ctx, req)
		return err
	}
}

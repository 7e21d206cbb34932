package orders

import (
	"context"
	"fmt"

	"github.com/go-kit/kit/endpoint"
	"google.golang.org/grpc"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/examples/orders/orderspb"
)

var _ client.EndpointFunc = Endpoints

// Endpoints is the orders service's client.EndpointFunc: over one
// connection, an endpoint that takes a *orderspb.GetOrderRequest or a
// *orderspb.CreateOrderRequest and answers with the *orderspb.Order. A
// status the instance answered with, such as NotFound, is its error.
func Endpoints(conn *grpc.ClientConn) endpoint.Endpoint {
	c := orderspb.NewOrdersClient(conn)
	return func(ctx context.Context, request any) (any, error) {
		var (
			o   *orderspb.Order
			err error
		)
		switch req := request.(type) {
		case *orderspb.GetOrderRequest:
			o, err = c.GetOrder(ctx, req)
		case *orderspb.CreateOrderRequest:
			o, err = c.CreateOrder(ctx, req)
		default:
			return nil, fmt.Errorf("orders: no method takes a %T", request)
		}
		if err != nil {
			return nil, err // not a typed nil in an interface
		}
		return o, nil
	}
}

// Idempotent is the orders service's client.RetryConfig.Idempotent: every
// request but CreateOrder's is safe to send twice.
func Idempotent(request any) bool {
	_, create := request.(*orderspb.CreateOrderRequest)
	return !create
}

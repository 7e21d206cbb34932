package orders_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-kit/log"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/examples/orders"
	"github.com/trimkit/trimkit/examples/orders/orderspb"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport/grpcserver"
)

// The examples need a Consul agent: they have no Output comment, so they
// are compiled but not run. The test in this directory runs the same
// wiring (examples/orders/server and client) against a real agent.

// A server of your own service: limits, registration in Consul, and one
// Instance that owns its whole life.
func Example_server() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	logger := log.NewLogfmtLogger(os.Stderr)
	consul, err := sd.ConsulConfig{}.NewClient() // CONSUL_HTTP_ADDR, else 127.0.0.1:8500
	if err != nil {
		fmt.Println(err)
		return
	}
	limits := grpcserver.Limits{MaxRecvMsgSize: 64 << 10}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	// Where callers reach the listener; ID defaults to orders-host-port.
	reg, err := sd.Registration{Name: "orders", HealthService: orderspb.Orders_ServiceDesc.ServiceName}.At(lis.Addr())
	if err != nil {
		fmt.Println(err)
		return
	}
	registrar, err := sd.NewRegistrar(consul, reg, logger)
	if err != nil {
		fmt.Println(err)
		return
	}
	svc, _ := orders.NewServer(reg.ID, "") // no ledger: nothing to open
	server := limits.NewServer()           // a *grpc.Server that knows its streams
	orderspb.RegisterOrdersServer(server, svc)

	// Serve, register, and on SIGTERM: NOT_SERVING, deregister, drain, stop.
	in := grpcserver.Instance{Server: server, Listener: limits.Listener(lis), Registrar: registrar, Logger: logger}
	if err := in.Run(ctx); err != nil {
		fmt.Println(err)
	}
}

// A caller: the client stack over Consul, which retries GetOrder freely
// and never sends a CreateOrder twice.
func Example_client() {
	ctx := context.Background()
	c, err := client.New(client.Config{
		Service: "orders", // found through CONSUL_HTTP_ADDR, else 127.0.0.1:8500
		CallConfig: client.CallConfig{
			Balancer: client.P2CName,
			Retry:    client.RetryConfig{Idempotent: orders.Idempotent},
		},
	}, orders.Endpoints)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close() // stops discovery, closes every connection

	resp, err := c.Endpoint()(ctx, &orderspb.CreateOrderRequest{RequestId: "r-1", Item: "widget", Quantity: 2})
	if err != nil {
		fmt.Println(err) // its one attempt may have reached an instance, or no instance could take it
		return
	}
	order := resp.(*orderspb.Order)
	fmt.Println("created", order.GetId(), "on", order.GetInstance())

	_, err = c.Endpoint()(ctx, &orderspb.GetOrderRequest{Id: order.GetId()})
	if status.Code(err) == codes.NotFound {
		fmt.Println("another instance answered: each keeps its own orders")
	}
}

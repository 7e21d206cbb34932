// Command client calls the orders example's service (see package orders)
// through trimkit's client stack: it creates orders and gets each back,
// through the go-kit face (client.New, orders.Endpoints). With -watch, it
// then follows new orders for a while through the gRPC-native face: one
// ClientConn (client.NewConn) and the generated client's WatchOrders
// stream, opened again on another instance whenever its instance leaves.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/go-kit/log"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/examples/orders"
	"github.com/trimkit/trimkit/examples/orders/orderspb"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "orders client:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	cfg := client.Config{CallConfig: client.CallConfig{
		Balancer: client.P2CName,
		Retry:    client.RetryConfig{Idempotent: orders.Idempotent}, // CreateOrder is never sent twice
	}}
	fs.StringVar(&cfg.Consul.Address, "consul-addr", "", "Consul agent address (default: CONSUL_HTTP_ADDR, else 127.0.0.1:8500)")
	fs.StringVar(&cfg.Service, "service", "orders", "Consul service name to call")
	n := fs.Int("n", 1, "orders to create and get back")
	watch := fs.Duration("watch", 0, "then follow new orders for this long, over a WatchOrders stream (0: not)")
	_ = fs.Parse(args) // ExitOnError
	logger := log.NewLogfmtLogger(log.NewSyncWriter(os.Stderr))

	c, err := client.New(cfg, orders.Endpoints, client.WithLogger(logger))
	if err != nil {
		return err
	}
	defer c.Close()
	call := c.Endpoint() // balanced and retried; takes orderspb requests
	for range *n {
		resp, err := call(ctx, &orderspb.CreateOrderRequest{RequestId: rand.Text(), Item: "widget", Quantity: 2})
		if err != nil {
			return fmt.Errorf("create order: %w", err)
		}
		created := resp.(*orderspb.Order)
		fmt.Fprintf(stdout, "created %s (%d %s) on %s\n", created.GetId(), created.GetQuantity(), created.GetItem(), created.GetInstance())
		resp, err = call(ctx, &orderspb.GetOrderRequest{Id: created.GetId()})
		switch {
		case status.Code(err) == codes.NotFound:
			fmt.Fprintln(stdout, "  not found: another instance answered (each keeps its own orders)")
		case err != nil:
			return fmt.Errorf("get order %s: %w", created.GetId(), err)
		default:
			fmt.Fprintf(stdout, "  got it back from %s\n", resp.(*orderspb.Order).GetInstance())
		}
	}
	if *watch > 0 {
		return follow(ctx, cfg, *watch, stdout, logger)
	}
	return nil
}

// follow prints the orders the instances create for d, over one
// ClientConn's WatchOrders streams.
func follow(ctx context.Context, cfg client.Config, d time.Duration, stdout io.Writer, logger log.Logger) error {
	conn, err := client.NewConn(cfg, client.WithLogger(logger))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	err = orders.Watch(ctx, conn, &orderspb.WatchOrdersRequest{}, func(o *orderspb.Order) {
		fmt.Fprintf(stdout, "new order %s (%d %s) on %s\n", o.GetId(), o.GetQuantity(), o.GetItem(), o.GetInstance())
	}, func(e orders.StreamEnd) {
		why := "its instance left"
		if e.Err != nil {
			why = e.Err.Error()
		}
		fmt.Fprintf(stdout, "  the stream on %s ended after %d orders (%s); opening another\n", e.Instance, e.Orders, why)
	})
	if errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return err
}

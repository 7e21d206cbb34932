// Command client calls the orders example's service (see package orders)
// through trimkit's client stack: it creates orders and gets each back.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"os"

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
	_ = fs.Parse(args) // ExitOnError

	c, err := client.New(cfg, orders.Endpoints, client.WithLogger(log.NewLogfmtLogger(log.NewSyncWriter(os.Stderr))))
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
	return nil
}

// Command server is the README's server quick start: the orders example
// service as an instance in Consul, in one call.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/trimkit/trimkit/examples/orders"
	"github.com/trimkit/trimkit/examples/orders/orderspb"
	"github.com/trimkit/trimkit/transport/grpcserver"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	svc, err := orders.NewServer(fmt.Sprintf("orders-%d", os.Getpid()), "") // no ledger file
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()
	server := grpcserver.DefaultLimits.NewServer() // a *grpc.Server with trimkit's limits
	orderspb.RegisterOrdersServer(server, svc)
	// Registers in the Consul of CONSUL_HTTP_ADDR (else 127.0.0.1:8500) once SERVING;
	// on SIGTERM: NOT_SERVING, deregister, drain, stop. Port 0 picks a free one.
	if err := grpcserver.Serve(ctx, server, "orders", "127.0.0.1:0"); err != nil {
		log.Fatal(err)
	}
}

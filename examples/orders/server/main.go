// Command server serves the orders example (see package orders): it
// registers in Consul and, on SIGTERM or SIGINT, leaves Consul, drains and
// stops without losing a call.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-kit/log"
	"google.golang.org/grpc"

	"github.com/trimkit/trimkit/examples/orders"
	"github.com/trimkit/trimkit/examples/orders/orderspb"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport/grpcserver"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "orders server:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "gRPC listen address (port 0 picks a free one)")
	var consul sd.ConsulConfig
	fs.StringVar(&consul.Address, "consul-addr", "", "Consul agent address (default: CONSUL_HTTP_ADDR, else 127.0.0.1:8500)")
	service := fs.String("service", "orders", "Consul service name to register as")
	ledger := fs.String("ledger", "", "file to append each CreateOrder's request_id to (default: none)")
	checkInterval := fs.Duration("check-interval", sd.DefaultCheckInterval, "how often Consul checks the instance")
	drain := fs.Duration("drain", 2*time.Second, "how long to go on serving after leaving Consul")
	_ = fs.Parse(args) // ExitOnError

	apiClient, _, where, err := consul.NewAPIClient()
	if err != nil {
		return err
	}
	limits := grpcserver.Limits{MaxRecvMsgSize: 64 << 10} // orders are small
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	host, port, err := sd.Advertise(lis.Addr().String(), "")
	if err != nil {
		return err
	}
	reg := sd.Registration{Name: *service, Address: host, Port: port, CheckInterval: *checkInterval,
		HealthService: orderspb.Orders_ServiceDesc.ServiceName}.WithDefaults()
	logger := log.With(log.NewLogfmtLogger(log.NewSyncWriter(os.Stderr)), "ts", log.DefaultTimestampUTC, "id", reg.ID)
	registrar, err := sd.NewRegistrar(sd.NewClient(apiClient), where, reg, logger)
	if err != nil {
		return err
	}
	svc, err := orders.NewServer(reg.ID, *ledger)
	if err != nil {
		return err
	}
	defer svc.Close()
	server := grpc.NewServer(limits.ServerOptions()...)
	orderspb.RegisterOrdersServer(server, svc)

	in := grpcserver.Instance{Server: server, Listener: limits.Listener(lis), Registrar: registrar, Drain: *drain, Logger: logger}
	return in.Run(ctx)
}

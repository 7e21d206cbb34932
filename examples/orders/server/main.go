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

	"github.com/trimkit/trimkit/examples/orders"
	"github.com/trimkit/trimkit/examples/orders/orderspb"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport/grpcserver"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "gRPC listen address (port 0 picks a free one)")
	var consul sd.ConsulConfig
	flag.StringVar(&consul.Address, "consul-addr", "", "Consul agent address (empty: CONSUL_HTTP_ADDR, else 127.0.0.1:8500)")
	reg := sd.Registration{HealthService: orderspb.Orders_ServiceDesc.ServiceName}
	flag.StringVar(&reg.Name, "service", "orders", "Consul service name to register as")
	flag.DurationVar(&reg.CheckInterval, "check-interval", 10*time.Second, "how often Consul checks the instance")
	ledger := flag.String("ledger", "", "file to append each CreateOrder's request_id to (empty: none)")
	drain := flag.Duration("drain", 2*time.Second, "how long to go on serving after leaving Consul")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, *addr, consul, reg, *ledger, *drain); err != nil {
		fmt.Fprintln(os.Stderr, "orders server:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, addr string, consul sd.ConsulConfig, reg sd.Registration, ledger string, drain time.Duration) error {
	limits := grpcserver.Limits{MaxRecvMsgSize: 64 << 10} // orders are small
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	lis = limits.Listener(lis)
	defer lis.Close() // Run closes it too
	if reg, err = reg.At(lis.Addr()); err != nil {
		return err
	}
	logger := log.With(log.NewLogfmtLogger(log.NewSyncWriter(os.Stderr)), "ts", log.DefaultTimestampUTC, "id", reg.ID)
	apiClient, err := consul.NewClient()
	if err != nil {
		return err
	}
	registrar, err := sd.NewRegistrar(apiClient, reg, logger)
	if err != nil {
		return err
	}
	svc, err := orders.NewServer(reg.ID, ledger)
	if err != nil {
		return err
	}
	defer svc.Close()
	server := limits.NewServer() // knows its streams: bounds them apart, ends them when it stops
	orderspb.RegisterOrdersServer(server, svc)
	return grpcserver.Instance{Server: server, Listener: lis, Registrar: registrar, Drain: drain, Logger: logger}.Run(ctx)
}

package grpcserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/go-kit/log"

	"github.com/trimkit/trimkit/sd"
)

// Serve runs server as an instance of the Consul service name until ctx
// ends, with the defaults of a service in Consul; it is an Instance with
// every optional part left to its default:
//
//   - it listens on addr (host:port; port 0 picks a free one), through
//     DefaultLimits' Listener (connection limits, handshake timeout); build
//     server with DefaultLimits.NewServer (or Limits of your own) to bound
//     its calls too;
//   - it reaches the Consul agent of the environment, as the consul CLI
//     does (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN or CONSUL_HTTP_TOKEN_FILE,
//     CONSUL_CACERT...; else 127.0.0.1:8500);
//   - it registers as name, with the default ID (name-host-port) and a
//     gRPC health check of the whole server, once it is SERVING, at the
//     address callers reach (a wildcard addr is advertised at the host's
//     first address; see sd.Registration.At), and keeps registered;
//   - when ctx ends (cancel it on SIGTERM) it goes NOT_SERVING,
//     deregisters, drains 2s and stops gracefully, losing no caller's call;
//   - it logs its steps to stderr, in logfmt.
//
// It returns nil after a clean stop, else what ended it (see Instance.Run).
// For anything else (a Ready hook, background tasks, a registration or a
// logger of your own), build an Instance.
func Serve(ctx context.Context, server Server, name, addr string) error {
	if server == nil {
		return errors.New("grpcserver.Serve: nil server")
	}
	consul, err := sd.ConsulConfig{}.NewClient()
	if err != nil {
		return fmt.Errorf("grpcserver.Serve: %w", err)
	}
	if c, ok := consul.(interface{ CloseIdleConnections() }); ok {
		defer c.CloseIdleConnections()
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("grpcserver.Serve: %w", err)
	}
	reg, err := sd.Registration{Name: name}.At(lis.Addr())
	if err != nil {
		lis.Close()
		return fmt.Errorf("grpcserver.Serve: %w", err)
	}
	logger := log.With(log.NewLogfmtLogger(log.NewSyncWriter(os.Stderr)), "ts", log.DefaultTimestampUTC, "id", reg.ID)
	registrar, err := sd.NewRegistrar(consul, reg, logger)
	if err != nil {
		lis.Close()
		return fmt.Errorf("grpcserver.Serve: %w", err)
	}
	return Instance{Server: server, Listener: DefaultLimits.Listener(lis), Registrar: registrar, Logger: logger}.Run(ctx)
}

package managerworker

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-kit/log"

	"github.com/trimkit/trimkit/sd"
)

// ConsulFlags adds the flags that say where Consul is, to fs.
func ConsulFlags(fs *flag.FlagSet, c *sd.ConsulConfig) {
	fs.StringVar(&c.Address, "consul-addr", "", "Consul agent HTTP address (default: CONSUL_HTTP_ADDR, else 127.0.0.1:8500)")
	fs.StringVar(&c.TokenFile, "consul-token-file", "", "file holding the Consul ACL token (default: CONSUL_HTTP_TOKEN_FILE)")
}

// Main runs run with a logfmt logger on stderr and a context that ends on
// SIGINT or SIGTERM; when run fails it prints the error after name and
// exits 1.
func Main(name string, run func(context.Context, log.Logger) error) {
	logger := log.With(log.NewLogfmtLogger(log.NewSyncWriter(os.Stderr)), "ts", log.DefaultTimestampUTC)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, logger)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

// Listener is a listener and the service ID its address gives.
type Listener struct {
	net.Listener
	Host string
	Port int
	ID   string // the default service ID: service-host-port
}

// Listen listens on addr (port 0 picks a free one) for an instance of
// service.
func Listen(addr, service string) (*Listener, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on -addr %s: %w", addr, err)
	}
	// At gives the address callers reach and, with it, the default ID.
	reg, err := sd.Registration{Name: service}.At(lis.Addr())
	if err != nil {
		lis.Close()
		return nil, err
	}
	return &Listener{Listener: lis, Host: reg.Address, Port: reg.Port, ID: reg.ID}, nil
}

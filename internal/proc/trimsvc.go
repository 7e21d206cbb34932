package proc

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/trimkit/trimkit/internal/addrfile"
)

// Trimsvc is a running trimsvc process and where it listens.
type Trimsvc struct {
	*Process
	Addr     string // advertised host:port
	ID       string // service ID
	HTTPAddr string // debug HTTP address, "" when -http-addr is off
}

// StartTrimsvc runs the trimsvc binary bin on a free loopback port against
// the Consul agent at consulAddr, with fast checks (1s interval, 1s resync,
// 200ms drain) and no debug HTTP server unless args say otherwise (later
// flags win), and waits until its listeners are bound (it writes them to
// its -addr-file). It has not necessarily registered yet.
func StartTrimsvc(bin, consulAddr string, args ...string) (*Trimsvc, error) {
	dir, err := os.MkdirTemp("", "trimsvc-addr")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "addr.json")
	all := append([]string{
		"-grpc-addr", "127.0.0.1:0",
		"-http-addr", "off",
		"-consul-addr", consulAddr,
		"-check-interval", "1s",
		"-resync-interval", "1s",
		"-drain", "200ms",
		"-addr-file", path,
	}, args...)
	p, err := Start(bin, all...)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := addrfile.Wait(ctx, path, p.Exited())
	if err != nil {
		p.Kill()
		return nil, fmt.Errorf("trimsvc: %w", err)
	}
	return &Trimsvc{Process: p, Addr: a.Advertised, ID: a.ServiceID, HTTPAddr: a.HTTP}, nil
}

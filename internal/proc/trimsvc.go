package proc

import (
	"fmt"
	"time"
)

// Trimsvc is a running trimsvc process and what it logged about itself.
type Trimsvc struct {
	*Process
	Addr     string // advertised host:port
	ID       string // service ID
	HTTPAddr string // debug HTTP address, "" when -http-addr is off
}

// StartTrimsvc runs the trimsvc binary bin on a free loopback port against
// the Consul agent at consulAddr, with fast checks (1s interval, 1s resync,
// 200ms drain) and no debug HTTP server unless args say otherwise (later
// flags win), and waits until it serves gRPC (and HTTP, when enabled).
func StartTrimsvc(bin, consulAddr string, args ...string) (*Trimsvc, error) {
	all := append([]string{
		"-grpc-addr", "127.0.0.1:0",
		"-http-addr", "off",
		"-consul-addr", consulAddr,
		"-check-interval", "1s",
		"-resync-interval", "1s",
		"-drain", "200ms",
	}, args...)
	p, err := Start(bin, all...)
	if err != nil {
		return nil, err
	}
	line, err := p.WaitLine(`msg="serving gRPC"`, 10*time.Second)
	if err != nil {
		p.Kill()
		return nil, fmt.Errorf("trimsvc: %w", err)
	}
	s := &Trimsvc{Process: p, Addr: LogValue(line, "advertised"), ID: LogValue(line, "service_id")}
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-http-addr" && args[i+1] != "off" {
			line, err := p.WaitLine(`msg="serving HTTP debug"`, 10*time.Second)
			if err != nil {
				p.Kill()
				return nil, fmt.Errorf("trimsvc: %w", err)
			}
			s.HTTPAddr = LogValue(line, "addr")
		}
	}
	return s, nil
}

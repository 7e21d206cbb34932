// Command connflood is an attacker that needs no certificate: it holds -n
// connections open to -addr and opens a new one whenever the server
// closes one, until SIGTERM or SIGINT. Each connection sends nothing
// (-mode silent), or a TLS ClientHello and then nothing (-mode hello).
// Every 100ms it prints "opened N closed M" to stdout: the connections it
// opened, and those the server closed. trimsvc's connection-flood test
// runs it against a real instance, as a process of its own.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "connflood:", err)
		os.Exit(2)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("connflood", flag.ContinueOnError)
	addr := fs.String("addr", "", "host:port to flood (required)")
	n := fs.Int("n", 2048, "connections to hold open")
	mode := fs.String("mode", "silent", "what each connection sends: silent (nothing) or hello (a TLS ClientHello, then nothing)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" || *n <= 0 || (*mode != "silent" && *mode != "hello") {
		return errors.New("want -addr, a positive -n and -mode silent or hello")
	}
	var hello []byte
	if *mode == "hello" {
		var err error
		if hello, err = clientHello(); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var opened, closed atomic.Int64
	var wg sync.WaitGroup
	for range *n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				c, err := net.Dial("tcp", *addr)
				if err != nil { // out of ports, say: try again
					time.Sleep(10 * time.Millisecond)
					continue
				}
				opened.Add(1)
				unhook := context.AfterFunc(ctx, func() { c.Close() })
				if hello != nil {
					_, _ = c.Write(hello)
				}
				_, _ = io.Copy(io.Discard, c) // until the server closes it
				if unhook() {
					closed.Add(1)
				}
				c.Close()
			}
		}()
	}
	report := func() { fmt.Printf("opened %d closed %d\n", opened.Load(), closed.Load()) }
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for ctx.Err() == nil {
		select {
		case <-tick.C:
			report()
		case <-ctx.Done():
		}
	}
	wg.Wait()
	report()
	return nil
}

// clientHello is the first flight of a TLS client: what a caller sends
// before anything else.
func clientHello() ([]byte, error) {
	c, s := net.Pipe()
	defer s.Close()
	go func() {
		defer c.Close()
		_ = tls.Client(c, &tls.Config{ServerName: "trimsvc", NextProtos: []string{"h2"}, InsecureSkipVerify: true}).Handshake()
	}()
	buf := make([]byte, 16<<10)
	n, err := s.Read(buf) // the ClientHello is one write
	if err != nil {
		return nil, fmt.Errorf("capture a ClientHello: %w", err)
	}
	return buf[:n], nil
}

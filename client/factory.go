package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/go-kit/kit/endpoint"
	kitsd "github.com/go-kit/kit/sd"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/internal/tlsfiles"
)

// EndpointFunc turns one gRPC connection to an instance into the
// endpoint callers call: typically a function that switches on the
// request's type and calls the matching method of the service's generated
// client over conn. It is called once per instance.
type EndpointFunc func(conn *grpc.ClientConn) endpoint.Endpoint

// Factory returns a go-kit sd.Factory that opens one gRPC connection
// (grpc.NewClient, plaintext unless opts say otherwise) per instance
// "host:port" and returns endpoints(conn); the io.Closer is the
// *grpc.ClientConn, whose state the Endpointer follows (connection tiers,
// ejection probes). The connection's balancer (trimkit's one-instance
// balancer: pick_first's behaviour, over one SubConn) tells the attempt
// that made each call how it ended, as a grpc balancer's PickResult.Done
// does: whether any of it was sent, which a call that is not idempotent
// needs to be retried at all, and the load the answer reports in its
// trailer (gRPC's ORCA format, as grpcserver's admission writes it) for
// P2C and LeastLoaded.
//
// The connection dials again after a failure sooner than grpc's default
// (100ms, then 1.6 times longer each time, ±20%, at most 5s; grpc's
// starts at a second and grows to two minutes): an instance restarted on its address is back in
// tens of milliseconds, and grpc's first wait of a second would fail every
// call to it, fast, for that second.
func Factory(endpoints EndpointFunc, opts ...grpc.DialOption) kitsd.Factory {
	registerBalancer()
	opts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(instanceServiceConfigJSON),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: reconnectBackoff, MinConnectTimeout: 20 * time.Second}),
	}, opts...)
	return func(instance string) (endpoint.Endpoint, io.Closer, error) {
		if endpoints == nil {
			return nil, nil, errors.New("client: Factory needs an EndpointFunc")
		}
		conn, err := grpc.NewClient(instance, opts...)
		if err != nil {
			return nil, nil, fmt.Errorf("grpc client for %s: %w", instance, err)
		}
		e := endpoints(conn)
		if e == nil {
			conn.Close()
			return nil, nil, fmt.Errorf("grpc client for %s: the EndpointFunc returned no endpoint", instance)
		}
		return e, conn, nil
	}
}

// reconnectBackoff is how long a Factory's connection waits before it
// dials again after a failed dial. grpc's default is for a client of one
// server it must not hammer; an instance that stays down leaves discovery
// within a health check or two, and its connection with it, so a few more
// dials meanwhile cost little. A grpc.WithConnectParams given to Factory
// replaces it.
var reconnectBackoff = backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second}

// DialOption returns the transport credentials t calls for: TLS (mutual
// with CertFile) from files that are read again when they change, each
// connection verifying its instance for ServerName or the address it
// dials. It reads the files now, so that a missing or bad one is an error
// here, not a failed call later.
func (t TLS) DialOption() (grpc.DialOption, error) {
	if err := t.validate(); err != nil {
		return nil, err
	}
	if t.CAFile == "" {
		return grpc.WithTransportCredentials(insecure.NewCredentials()), nil
	}
	certs, err := tlsfiles.LoadCerts(t.CertFile, t.KeyFile, t.CAFile)
	if err != nil {
		return nil, err
	}
	return grpc.WithTransportCredentials(tlsfiles.ClientCreds(certs, t.ServerName)), nil
}

// plaintextHint adds a likely cause to the failure a plaintext call gets
// from an instance that speaks TLS: it closes the connection before
// HTTP/2 begins, which gRPC reports as an unreadable server preface
// ending in EOF or, when the close races the client's first write, in a
// connection reset.
func plaintextHint(e endpoint.Endpoint) endpoint.Endpoint {
	return hinted(e, func(msg string) string {
		if closedBeforePreface(msg) {
			return "the instance closed the connection before HTTP/2 began: does it require TLS? this client calls in plaintext (TLS.CAFile, -tls-ca-file)"
		}
		return ""
	})
}

// closedBeforePreface reports whether msg is grpc-go's word for a
// connection its server closed before HTTP/2 began: "error reading server
// preface: " then EOF or a connection reset. gRPC gives only the text (an
// Unavailable status); cmd/client's TestMutualTLSCalls pins it to a real
// plaintext call to a TLS-only instance.
func closedBeforePreface(msg string) bool {
	_, cause, ok := strings.Cut(msg, "error reading server preface: ")
	return ok && (strings.HasPrefix(cause, "EOF") || strings.Contains(cause, "connection reset by peer"))
}

// refusedHint adds a likely cause to the failure a TLS call gets from an
// instance that refused the client in the handshake: a TLS alert, which
// under TLS 1.3 reaches the client only as its first read fails, so gRPC
// reports it as an unreadable server preface. certFile is the client's
// certificate, "" for none.
func refusedHint(e endpoint.Endpoint, certFile string) endpoint.Endpoint {
	presents := "this client presents none (TLS.CertFile, -tls-cert-file)"
	if certFile != "" {
		presents = "this client presents " + certFile
	}
	return hinted(e, func(msg string) string {
		if alert, ok := tlsAlert(msg); ok {
			return "the instance refused this client in the TLS handshake (" + alert + "): it requires a client certificate (mutual TLS) " +
				"signed by its client CA, within its validity dates, listing the client-auth usage; " + presents
		}
		return ""
	})
}

// tlsAlert is the alert in msg when msg carries crypto/tls's word for
// one its peer sent ("remote error: tls: " then the alert, as
// tls.AlertError has it), which gRPC passes on only as text in an
// Unavailable status; cmd/client's TestMutualTLSCalls pins it to real
// refusals by a mutual-TLS instance.
func tlsAlert(msg string) (alert string, ok bool) {
	_, alert, ok = strings.Cut(msg, "remote error: tls: ")
	alert, _, _ = strings.Cut(alert, `"`)
	return alert, ok
}

// hinted adds hint(msg) to the Unavailable failures of e whose message
// it finds a cause in.
func hinted(e endpoint.Endpoint, hint func(msg string) string) endpoint.Endpoint {
	return func(ctx context.Context, request interface{}) (interface{}, error) {
		resp, err := e(ctx, request)
		if err != nil && status.Code(err) == codes.Unavailable {
			if h := hint(err.Error()); h != "" {
				err = &hintError{err: err, hint: h}
			}
		}
		return resp, err
	}
}

// hintError is err with a likely cause; it keeps err's status code.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() + " (" + e.hint + ")" }
func (e *hintError) Unwrap() error { return e.err }

// GRPCStatus is err's status with the hint in its message.
func (e *hintError) GRPCStatus() *status.Status {
	return status.New(status.Code(e.err), e.Error())
}

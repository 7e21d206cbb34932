package client

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/go-kit/kit/endpoint"
	kitsd "github.com/go-kit/kit/sd"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/transport"
)

// Factory returns a go-kit sd.Factory that opens one gRPC connection
// (grpc.NewClient, plaintext unless opts say otherwise) per instance
// "host:port" and returns the TrimSpace endpoint over it; the io.Closer
// closes the connection.
func Factory(opts ...grpc.DialOption) kitsd.Factory {
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	return func(instance string) (endpoint.Endpoint, io.Closer, error) {
		conn, err := grpc.NewClient(instance, opts...)
		if err != nil {
			return nil, nil, fmt.Errorf("grpc client for %s: %w", instance, err)
		}
		return transport.NewGRPCClient(conn).TrimSpaceEndpoint, conn, nil
	}
}

// plaintextHint adds a likely cause to the failure a plaintext call gets
// from an instance that speaks TLS: it closes the connection before
// HTTP/2 begins, which gRPC reports as an unreadable server preface
// ending in EOF or, when the close races the client's first write, in a
// connection reset.
func plaintextHint(e endpoint.Endpoint) endpoint.Endpoint {
	return hinted(e, func(msg string) string {
		if closedBeforePreface(msg) {
			return "the instance closed the connection before HTTP/2 began: does it require TLS? this client calls in plaintext (TLSCAFile, -tls-ca-file)"
		}
		return ""
	})
}

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
	presents := "this client presents none (TLSCertFile, -tls-cert-file)"
	if certFile != "" {
		presents = "this client presents " + certFile
	}
	return hinted(e, func(msg string) string {
		if _, alert, ok := strings.Cut(msg, "remote error: tls: "); ok {
			alert, _, _ = strings.Cut(alert, `"`)
			return "the instance refused this client in the TLS handshake (" + alert + "): it requires a client certificate (mutual TLS) " +
				"signed by its client CA, within its validity dates, listing the client-auth usage; " + presents
		}
		return ""
	})
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

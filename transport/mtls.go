package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// ServerCreds are the gRPC server options that serve TLS with c's
// certificate and, when c has a CA, require client certificates signed by
// it (mutual TLS).
//
// The client certificate is asked for in the handshake and verified on
// every call, by interceptors that answer Unauthenticated with the reason
// (no certificate, or why it does not verify). Verified in the handshake,
// a refused client would learn nothing: TLS 1.3 ends the client's side of
// the handshake before the server checks the certificate, so the client
// sees a closed connection. No method runs for an unverified client; a
// certificate's verdict is kept until the CA changes.
func ServerCreds(c *Certs) []grpc.ServerOption {
	opts := []grpc.ServerOption{grpc.Creds(credentials.NewTLS(ServerTLS(c)))}
	if c.caFile == "" {
		return opts
	}
	v := &clientVerifier{certs: c, verdicts: map[string]error{}}
	return append(opts,
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if err := v.verify(ctx); err != nil {
				return nil, err
			}
			return handler(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if err := v.verify(ss.Context()); err != nil {
				return err
			}
			return handler(srv, ss)
		}),
	)
}

// ServerTLS is a server's TLS configuration: its certificate (the current
// one at each handshake), and, when c has a CA, a client certificate asked
// for. Used alone (not through ServerCreds) it leaves verifying that
// certificate to its caller. Certs without a certificate fail every
// handshake.
func ServerTLS(c *Certs) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			cert, _ := c.current()
			if cert == nil {
				return nil, errors.New("transport: no server certificate: serving TLS needs a certificate and key file")
			}
			return cert, nil
		},
	}
	if c.caFile != "" {
		cfg.ClientAuth = tls.RequestClientCert
	}
	return cfg
}

// clientVerifier verifies the client certificate of a call against the CA
// of the moment, remembering each certificate's verdict for as long as the
// CA stays the same.
type clientVerifier struct {
	certs *Certs

	mu       sync.Mutex
	pool     *x509.CertPool // the verdicts are against this one
	verdicts map[string]error
}

// maxVerdicts bounds the verdicts kept; past it they are forgotten.
const maxVerdicts = 10000

func (v *clientVerifier) verify(ctx context.Context) error {
	p, ok := peer.FromContext(ctx)
	var info credentials.TLSInfo
	if ok {
		info, ok = p.AuthInfo.(credentials.TLSInfo)
	}
	if !ok || len(info.State.PeerCertificates) == 0 {
		return status.Error(codes.Unauthenticated, "no client certificate: this server requires one signed by its client CA (mutual TLS)")
	}
	leaf := info.State.PeerCertificates[0]
	_, pool := v.certs.current()
	v.mu.Lock()
	if v.pool != pool || len(v.verdicts) > maxVerdicts {
		v.pool, v.verdicts = pool, map[string]error{}
	}
	err, known := v.verdicts[string(leaf.Signature)] // no copy for a lookup
	v.mu.Unlock()
	if !known {
		opts := x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		if verr := verifyChain(info.State.PeerCertificates, opts); verr != nil {
			err = status.Error(codes.Unauthenticated, fmt.Sprintf("client certificate refused: %v", verr))
		}
		v.mu.Lock()
		if v.pool == pool {
			v.verdicts[string(leaf.Signature)] = err
		}
		v.mu.Unlock()
	}
	return err
}

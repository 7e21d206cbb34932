package tlsfiles

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// ServerCreds are the gRPC server options that serve TLS with c's
// certificate and, when c has a CA, require client certificates signed by
// it (mutual TLS). With HealthCheckCA, certificates of a second CA are let
// in too, for grpc.health.v1 only.
//
// Why a forged or stale certificate cannot get a method run:
//   - The client's chain is verified in the TLS handshake (ServerTLS), by
//     crypto/tls against the CA of the moment, after the client proved it
//     holds the leaf's private key. A caller without a certificate that
//     verifies never gets an HTTP/2 connection: no stream, no message
//     buffer, no handler.
//   - Nothing is remembered across connections: a connection is trusted
//     for the chain its own handshake verified, and for nothing else. (The
//     design this replaces kept verdicts keyed by the leaf's signature,
//     which anyone who has seen a trusted certificate can copy into one of
//     their own.)
//   - Every call checks again, on the verified chain of its connection,
//     that each certificate in it (leaf, intermediates, root) is still
//     within its validity window and that the root is still in the CA file
//     (and, for a root of the health-check CA, that the call is a health
//     check): a connection whose leaf expired, or whose CA was rotated out,
//     runs no further method. The check reads times and a map: no
//     allocation.
func ServerCreds(c *Certs, opts ...TrustOption) []grpc.ServerOption {
	t := newTrust(c, opts)
	cfg := t.serverTLS()
	creds := []grpc.ServerOption{grpc.Creds(&serverCreds{TransportCredentials: credentials.NewTLS(cfg), cfg: cfg})}
	if c.caFile == "" {
		return creds
	}
	return append(creds,
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if err := t.stillTrusted(ctx, info.FullMethod, time.Now()); err != nil {
				return nil, err
			}
			return handler(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if err := t.stillTrusted(ss.Context(), info.FullMethod, time.Now()); err != nil {
				return err
			}
			return handler(srv, ss)
		}),
	)
}

// TrustOption changes whom a server trusts.
type TrustOption func(*trust)

// HealthCheckCA lets in client certificates signed by check's CA too, for
// grpc.health.v1 calls only: the Consul agents' CA, whose certificate the
// agent presents to a TLS health check (enable_agent_tls_for_checks), so
// that a service can keep a CA of its own for its callers and still be
// checked by Consul, without letting every Consul certificate call it.
func HealthCheckCA(check *Certs) TrustOption {
	return func(t *trust) { t.check = check }
}

var errNoClientCert = errors.New("tls: no verified client certificate")

// healthPrefix starts the full names of grpc.health.v1's methods.
const healthPrefix = "/grpc.health.v1.Health/"

// trust is whom a server lets in: clients of c's CA, and, with check, of
// check's CA for health checks.
type trust struct {
	c, check *Certs
	last     atomic.Pointer[trustConfig] // the handshake configuration for the bundles of the moment
}

// trustConfig is a server's TLS configuration for one pair of bundles.
type trustConfig struct {
	ca, check *caBundle
	cfg       *tls.Config
}

func newTrust(c *Certs, opts []TrustOption) *trust {
	t := &trust{c: c}
	for _, o := range opts {
		o(t)
	}
	return t
}

// bundles are the CA bundles of the moment.
func (t *trust) bundles() (ca, check *caBundle) {
	_, ca = t.c.current()
	if t.check != nil {
		_, check = t.check.current()
	}
	return ca, check
}

// ServerTLS is a server's TLS configuration: its certificate (the current
// one at each handshake), and, when c has a CA, a client certificate
// required and verified in the handshake against the CA of the moment (and
// HealthCheckCA's), which must list the client-auth extended key usage. A
// client refused there gets a TLS alert that says why (unknown certificate
// authority, expired certificate, bad certificate, certificate required).
// Certs without a certificate fail every handshake. ServerCreds adds what a
// gRPC server needs on top.
func ServerTLS(c *Certs, opts ...TrustOption) *tls.Config {
	return newTrust(c, opts).serverTLS()
}

func (t *trust) serverTLS() *tls.Config {
	base := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			cert, _ := t.c.current()
			if cert == nil {
				return nil, errors.New("transport: no server certificate: serving TLS needs a certificate and key file")
			}
			return cert, nil
		},
	}
	if t.c.caFile == "" {
		return base
	}
	base.ClientAuth = tls.RequireAndVerifyClientCert
	base.VerifyPeerCertificate = func(_ [][]byte, chains [][]*x509.Certificate) error {
		// crypto/tls verified the chains, for client auth; the leaf must
		// also say it is for calling (see requireUsage).
		if len(chains) == 0 || len(chains[0]) == 0 {
			return errNoClientCert
		}
		if err := requireUsage(chains[0][0], x509.ExtKeyUsageClientAuth); err != nil {
			return &tls.CertificateVerificationError{UnverifiedCertificates: chains[0], Err: err}
		}
		return nil
	}
	cfg := base.Clone()
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return t.handshakeConfig(base), nil
	}
	cfg.ClientCAs = t.handshakeConfig(base).ClientCAs
	return cfg
}

// handshakeConfig is base verifying client certificates against the
// bundles of the moment, made once per pair of bundles.
func (t *trust) handshakeConfig(base *tls.Config) *tls.Config {
	ca, check := t.bundles()
	if last := t.last.Load(); last != nil && last.ca == ca && last.check == check {
		return last.cfg
	}
	cfg := base.Clone()
	cfg.ClientCAs = ca.pool
	if check != nil {
		cfg.ClientCAs = ca.pool.Clone()
		for _, root := range check.certs {
			cfg.ClientCAs.AddCert(root)
		}
	}
	t.last.Store(&trustConfig{ca: ca, check: check, cfg: cfg})
	return cfg
}

// serverCreds are grpc-go's TLS server credentials, but for what happens
// to a client the handshake refuses.
type serverCreds struct {
	credentials.TransportCredentials
	cfg *tls.Config
}

// Bounds of the wait for a refused client to read why.
const (
	refusalLinger = 500 * time.Millisecond
	refusalDrain  = 64 << 10
)

// ServerHandshake is grpc-go's, but a client whose certificate the
// handshake refused gets to read the alert that says why. Under TLS 1.3 the
// client's side of the handshake is over before the server has verified
// its certificate, and it writes its HTTP/2 preface at once; a server that
// closed the connection with that unread would reset it, and the client
// would see a reset or a broken pipe in place of the alert. So the server
// reads and drops what the client sends, briefly and up to a bound, before
// it closes. (A client that does not speak TLS at all is closed at once:
// it reads EOF, which trimkit's client explains.)
func (sc *serverCreds) ServerHandshake(rawConn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn := tls.Server(rawConn, sc.cfg)
	if err := conn.Handshake(); err != nil {
		var refused *tls.CertificateVerificationError
		if errors.As(err, &refused) || errors.Is(err, errNoClientCert) || strings.Contains(err.Error(), "client didn't provide a certificate") {
			_ = rawConn.SetReadDeadline(time.Now().Add(refusalLinger))
			_, _ = io.Copy(io.Discard, io.LimitReader(rawConn, refusalDrain))
		}
		rawConn.Close()
		return nil, nil, err
	}
	state := conn.ConnectionState()
	if state.NegotiatedProtocol != "h2" {
		conn.Close()
		return nil, nil, errors.New("transport: the client did not negotiate HTTP/2 (ALPN h2)")
	}
	return conn, credentials.TLSInfo{State: state, CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
}

func (sc *serverCreds) Clone() credentials.TransportCredentials {
	return &serverCreds{TransportCredentials: sc.TransportCredentials.Clone(), cfg: sc.cfg}
}

// stillTrusted checks the verified client chain of the connection a call
// of method came on, at now: see ServerCreds.
func (t *trust) stillTrusted(ctx context.Context, method string, now time.Time) error {
	p, ok := peer.FromContext(ctx)
	var info credentials.TLSInfo
	if ok {
		info, ok = p.AuthInfo.(credentials.TLSInfo)
	}
	if !ok || len(info.State.VerifiedChains) == 0 {
		return status.Error(codes.Unauthenticated, "no verified client certificate: this server requires one signed by its client CA (mutual TLS)")
	}
	ca, check := t.bundles()
	var why string
	for _, chain := range info.State.VerifiedChains {
		if why = validity(chain, now); why != "" {
			continue
		}
		root := chain[len(chain)-1].Raw
		if _, ok := ca.roots[string(root)]; ok { // no copy for a lookup
			return nil
		}
		if check != nil {
			if _, ok := check.roots[string(root)]; ok {
				if strings.HasPrefix(method, healthPrefix) {
					return nil
				}
				return status.Error(codes.PermissionDenied, "a certificate of the health-check CA may call grpc.health.v1 only")
			}
		}
		why = "its certificate authority is no longer in the client CA file"
	}
	return status.Error(codes.Unauthenticated, "client certificate no longer trusted: "+why)
}

// validity says why a chain is not within its validity window at now, or
// "".
func validity(chain []*x509.Certificate, now time.Time) string {
	for _, cert := range chain {
		if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
			return fmt.Sprintf("certificate %q is outside its validity window (%s to %s)", cert.Subject.CommonName,
				cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	return ""
}

// ClientCreds are gRPC transport credentials for calling over TLS with c
// (see ClientTLS): each connection verifies the server's certificate for
// serverName when given, else for the host of the address dialled (an IP
// address is checked against the certificate's IP SANs), and sends that
// name as the TLS server name where it is a DNS name.
func ClientCreds(c *Certs, serverName string) credentials.TransportCredentials {
	return &clientCreds{certs: c, serverName: serverName}
}

type clientCreds struct {
	certs      *Certs
	serverName string
}

func (cc *clientCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	name := cc.serverName
	if name == "" {
		name = authority
		if host, _, err := net.SplitHostPort(authority); err == nil {
			name = host
		}
	}
	// A configuration of its own per connection, for its name: grpc-go
	// takes the name to send from the authority it is given.
	return credentials.NewTLS(ClientTLS(cc.certs, name)).ClientHandshake(ctx, name, conn)
}

func (cc *clientCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("transport: ClientCreds cannot serve")
}

func (cc *clientCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

func (cc *clientCreds) Clone() credentials.TransportCredentials {
	clone := *cc
	return &clone
}

// OverrideServerName implements credentials.TransportCredentials.
//
// Deprecated: as in grpc-go; use the serverName of ClientCreds.
func (cc *clientCreds) OverrideServerName(name string) error {
	cc.serverName = name
	return nil
}

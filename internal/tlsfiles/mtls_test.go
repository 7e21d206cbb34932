package tlsfiles_test

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trimkit/trimkit/internal/tlsfiles"

	"github.com/go-kit/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/internal/pki"
	"github.com/trimkit/trimkit/pb"
	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
)

// countingHealth is a health service that counts the calls its handler ran.
type countingHealth struct {
	healthpb.UnimplementedHealthServer
	calls atomic.Int64
}

func (h *countingHealth) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	h.calls.Add(1)
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

// mtlsServer serves a counting health service with mutual TLS: a server
// certificate for 127.0.0.1 from ca, client certificates required from
// clientCA.
func mtlsServer(t *testing.T, ca, clientCA *pki.CA) (string, *countingHealth) {
	t.Helper()
	srv, err := ca.LoopbackServer("server")
	if err != nil {
		t.Fatal(err)
	}
	certs, err := tlsfiles.LoadCerts(srv.CertFile, srv.KeyFile, clientCA.File)
	if err != nil {
		t.Fatal(err)
	}
	return serveHealth(t, tlsfiles.ServerCreds(certs)...)
}

func serveHealth(t *testing.T, opts ...grpc.ServerOption) (string, *countingHealth) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &countingHealth{}
	s := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(s, h)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String(), h
}

// dial is a connection to addr that presents cert (nil: none) and trusts
// trust.
func dial(t *testing.T, addr string, trust *pki.CA, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(trust.ClientConfig(cert))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func check(conn *grpc.ClientConn) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

// refused asserts that a call on conn fails, that the handler did not run,
// and that the error says want.
func refused(t *testing.T, name string, conn *grpc.ClientConn, h *countingHealth, want string) {
	t.Helper()
	before := h.calls.Load()
	err := check(conn)
	if err == nil {
		t.Errorf("%s: accepted", name)
		return
	}
	t.Logf("%s: %v", name, err)
	if !strings.Contains(err.Error(), want) {
		t.Errorf("%s: error %q does not say %q", name, err, want)
	}
	if ran := h.calls.Load() - before; ran != 0 {
		t.Errorf("%s: the handler ran %d time(s)", name, ran)
	}
}

func TestMutualTLSRefusesWhatDoesNotVerify(t *testing.T) {
	ca, err := pki.NewCA(t.TempDir(), "ca")
	if err != nil {
		t.Fatal(err)
	}
	addr, h := mtlsServer(t, ca, ca)
	good, err := ca.Issue(pki.Leaf{Name: "caller", Usage: pki.Client})
	if err != nil {
		t.Fatal(err)
	}
	if err := check(dial(t, addr, ca, good.TLS())); err != nil {
		t.Fatalf("a client certificate from the CA: %v", err)
	}
	if want, have := int64(1), h.calls.Load(); want != have {
		t.Fatalf("handler calls: want %d, have %d", want, have)
	}

	// After a legitimate call was accepted.
	attacks, err := pki.Attacks(ca, good, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range attacks {
		refused(t, a.Name, dial(t, addr, ca, a.Cert), h, a.Alert)
	}
}

// A certificate accepted once is not accepted after it expires, on the
// connection it was accepted on or a new one.
func TestMutualTLSRefusesACertificateThatExpiredAfterAcceptance(t *testing.T) {
	ca, err := pki.NewCA(t.TempDir(), "ca")
	if err != nil {
		t.Fatal(err)
	}
	addr, h := mtlsServer(t, ca, ca)
	// Certificates hold whole seconds: at least 2s left, whatever the clock's fraction.
	short, err := ca.Issue(pki.Leaf{Name: "short", Usage: pki.Client, NotAfter: time.Now().Truncate(time.Second).Add(3 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	conn := dial(t, addr, ca, short.TLS())
	if err := check(conn); err != nil {
		t.Fatalf("before it expires: %v", err)
	}
	time.Sleep(time.Until(short.Cert.NotAfter) + 10*time.Millisecond) // the point of the test: it expires
	refused(t, "the accepted connection", conn, h, "outside its validity window")
	refused(t, "a new connection", dial(t, addr, ca, short.TLS()), h, "tls: expired certificate")
}

// A certificate presented without its intermediate is refused; presented
// with it, it is accepted: no verdict is remembered for the leaf.
func TestMutualTLSIntermediateOnSecondTry(t *testing.T) {
	root, err := pki.NewCA(t.TempDir(), "root")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.Intermediate("intermediate")
	if err != nil {
		t.Fatal(err)
	}
	addr, h := mtlsServer(t, root, root)
	leaf, err := inter.Issue(pki.Leaf{Name: "caller", Usage: pki.Client})
	if err != nil {
		t.Fatal(err)
	}
	refused(t, "without its intermediate", dial(t, addr, root, leaf.TLS()), h, "tls: unknown certificate authority")
	if err := check(dial(t, addr, root, leaf.TLS(inter.Cert))); err != nil {
		t.Errorf("with its intermediate: %v", err)
	}
}

// A CA taken out of the client CA file takes the trust of connections
// verified against it with it.
func TestMutualTLSRotatedOutCA(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.LoopbackServer("server")
	if err != nil {
		t.Fatal(err)
	}
	clientCA, err := pki.NewCA(dir, "client-ca")
	if err != nil {
		t.Fatal(err)
	}
	certs, err := tlsfiles.LoadCerts(srv.CertFile, srv.KeyFile, clientCA.File)
	if err != nil {
		t.Fatal(err)
	}
	addr, h := serveHealth(t, tlsfiles.ServerCreds(certs)...)
	caller, err := clientCA.Issue(pki.Leaf{Name: "caller", Usage: pki.Client})
	if err != nil {
		t.Fatal(err)
	}
	conn := dial(t, addr, ca, caller.TLS())
	if err := check(conn); err != nil {
		t.Fatal(err)
	}
	newCA, err := pki.NewCA(t.TempDir(), "new-client-ca")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(newCA.File)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFile(clientCA.File, b); err != nil {
		t.Fatal(err)
	}
	if err := certs.Reload(); err != nil {
		t.Fatal(err)
	}
	refused(t, "a connection verified against the old CA", conn, h, "no longer in the client CA file")
}

// The client verifies an instance's certificate for the address it dials
// (or TLSServerName), and only as a server certificate.
func TestClientRefusesAServerCertificateNotForTheInstance(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	trust, err := tlsfiles.LoadCerts("", "", ca.File)
	if err != nil {
		t.Fatal(err)
	}
	loopback := []net.IP{net.IPv4(127, 0, 0, 1)}
	for _, tc := range []struct {
		name       string
		leaf       pki.Leaf
		serverName string // the client's TLSServerName
		want       string // "" for accepted
	}{
		{"a server certificate for the address", pki.Leaf{IPs: loopback, Usage: pki.Server}, "", ""},
		{"wrong IP", pki.Leaf{IPs: []net.IP{net.IPv4(127, 0, 0, 2)}, Usage: pki.Server}, "", "not 127.0.0.1"},
		{"a name, dialled by IP", pki.Leaf{DNSNames: []string{"svc.internal"}, Usage: pki.Server}, "", "doesn't contain any IP SANs"},
		{"the name asked for", pki.Leaf{DNSNames: []string{"svc.internal"}, Usage: pki.Server}, "svc.internal", ""},
		{"wrong name", pki.Leaf{DNSNames: []string{"other.internal"}, Usage: pki.Server}, "svc.internal", "not svc.internal"},
		{"a client certificate", pki.Leaf{IPs: loopback, Usage: pki.Client}, "", "incompatible key usage"},
		{"no extended key usage", pki.Leaf{IPs: loopback, Usage: pki.NoUsage}, "", "does not list the server-auth extended key usage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.leaf.Name = strings.ReplaceAll(tc.name, " ", "-")
			srv, err := ca.Issue(tc.leaf)
			if err != nil {
				t.Fatal(err)
			}
			certs, err := tlsfiles.LoadCerts(srv.CertFile, srv.KeyFile, "")
			if err != nil {
				t.Fatal(err)
			}
			addr, h := serveHealth(t, tlsfiles.ServerCreds(certs)...)
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(tlsfiles.ClientCreds(trust, tc.serverName)))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			err = check(conn)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Errorf("accepted")
			case tc.want != "":
				t.Logf("refused: %v", err)
				if !strings.Contains(err.Error(), tc.want) {
					t.Errorf("error %q does not say %q", err, tc.want)
				}
				if status.Code(err) != codes.Unavailable {
					t.Errorf("code %v, want Unavailable", status.Code(err))
				}
				if n := h.calls.Load(); n != 0 {
					t.Errorf("the call reached the server %d time(s)", n)
				}
			}
		})
	}
}

// A certificate of the health-check CA (the Consul agents') may call
// grpc.health.v1 and nothing else; the service's callers' CA may call all.
func TestHealthCheckCAMayOnlyCheckHealth(t *testing.T) {
	ca, err := pki.NewCA(t.TempDir(), "service-ca")
	if err != nil {
		t.Fatal(err)
	}
	agents, err := pki.NewCA(t.TempDir(), "agents-ca")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.LoopbackServer("server")
	if err != nil {
		t.Fatal(err)
	}
	certs, err := tlsfiles.LoadCerts(srv.CertFile, srv.KeyFile, ca.File)
	if err != nil {
		t.Fatal(err)
	}
	checkCA, err := tlsfiles.LoadCerts("", "", agents.File)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(tlsfiles.ServerCreds(certs, tlsfiles.HealthCheckCA(checkCA))...)
	h := &countingHealth{}
	healthpb.RegisterHealthServer(s, h)
	svc, _ := trimsvc.New(16)
	pb.RegisterTrimServer(s, trim.NewGRPCServer(trimsvc.NewServerSet(svc), "id", log.NewNopLogger()))
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)

	call := func(conn *grpc.ClientConn) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := pb.NewTrimClient(conn).TrimSpace(ctx, &pb.TrimRequest{S: "a b"})
		return err
	}
	agent, err := agents.Issue(pki.Leaf{Name: "agent", Usage: pki.Both})
	if err != nil {
		t.Fatal(err)
	}
	conn := dial(t, lis.Addr().String(), ca, agent.TLS())
	if err := check(conn); err != nil {
		t.Errorf("the agent's health check: %v", err)
	}
	if err := call(conn); status.Code(err) != codes.PermissionDenied {
		t.Errorf("the agent's certificate calling the service: want PermissionDenied, have %v", err)
	}
	caller, err := ca.Issue(pki.Leaf{Name: "caller", Usage: pki.Client})
	if err != nil {
		t.Fatal(err)
	}
	conn = dial(t, lis.Addr().String(), ca, caller.TLS())
	if err := check(conn); err != nil {
		t.Errorf("a caller's health check: %v", err)
	}
	if err := call(conn); err != nil {
		t.Errorf("a caller calling the service: %v", err)
	}
}

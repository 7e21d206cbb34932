package grpcserver

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trimkit/trimkit/internal/pki"
	"github.com/trimkit/trimkit/internal/tlsfiles"
)

// TLS, as a program serving an Instance takes it: file pairs checked,
// mutual TLS with a health-check CA whose certificates call health only.
func TestTLS(t *testing.T) {
	for _, tc := range []struct {
		tls  TLS
		want string
	}{
		{TLS{CertFile: "c.pem"}, "CertFile and KeyFile go together"},
		{TLS{KeyFile: "k.pem"}, "CertFile and KeyFile go together"},
		{TLS{ClientCAFile: "ca.pem"}, "ClientCAFile needs CertFile"},
		{TLS{CertFile: "c.pem", KeyFile: "k.pem", HealthCheckCAFile: "ca.pem"}, "HealthCheckCAFile needs ClientCAFile"},
		{TLS{CertFile: "/nonexistent/c.pem", KeyFile: "/nonexistent/k.pem"}, "/nonexistent/c.pem"},
	} {
		if _, _, err := tc.tls.ServerOptions(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: want an error with %q, have %v", tc.tls, tc.want, err)
		}
	}
	if opts, reload, err := (TLS{}).ServerOptions(); len(opts) != 0 || err != nil || reload() != nil {
		t.Errorf("the zero TLS: want plaintext, have %d options (%v)", len(opts), err)
	}

	dir := t.TempDir()
	svcCA, err := pki.NewCA(dir, "svc-ca")
	if err != nil {
		t.Fatal(err)
	}
	consulCA, err := pki.NewCA(dir, "consul-ca")
	if err != nil {
		t.Fatal(err)
	}
	server, err := svcCA.LoopbackServer("server")
	if err != nil {
		t.Fatal(err)
	}
	caller, err := svcCA.Issue(pki.Leaf{Name: "caller", Usage: pki.Client})
	if err != nil {
		t.Fatal(err)
	}
	checker, err := consulCA.Issue(pki.Leaf{Name: "agent", Usage: pki.Client})
	if err != nil {
		t.Fatal(err)
	}
	opts, reload, err := TLS{CertFile: server.CertFile, KeyFile: server.KeyFile, ClientCAFile: svcCA.File, HealthCheckCAFile: consulCA.File}.ServerOptions()
	if err != nil {
		t.Fatal(err)
	}
	if err := reload(); err != nil {
		t.Errorf("reload: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(opts...)
	s.RegisterService(echoDesc(func(_ context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) { return in, nil }), nil)
	healthpb.RegisterHealthServer(s, health.NewServer())
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)

	dial := func(leaf *pki.Issued) *grpc.ClientConn {
		t.Helper()
		certs, err := tlsfiles.LoadCerts(leaf.CertFile, leaf.KeyFile, svcCA.File)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(tlsfiles.ClientCreds(certs, "")))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	callerConn, checkerConn := dial(caller), dial(checker)
	if err := echo(ctx, callerConn, []byte("x")); err != nil {
		t.Errorf("the service's caller: %v", err)
	}
	if _, err := healthpb.NewHealthClient(checkerConn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("the agent's health check: %v", err)
	}
	if want, have := codes.PermissionDenied, status.Code(echo(ctx, checkerConn, []byte("x"))); want != have {
		t.Errorf("the agent calling the service: want %v, have %v", want, have)
	}
}

package bench

import (
	"fmt"
	"net"
	"sync"
	"testing"

	"github.com/trimkit/trimkit/internal/tlsfiles"

	"github.com/go-kit/log"
	"google.golang.org/grpc"

	"github.com/trimkit/trimkit/internal/pki"
	"github.com/trimkit/trimkit/pb"
	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
)

// server is an in-process trim server on one or more loopback listeners.
type server struct {
	grpc  *grpc.Server
	addrs []string
	wg    sync.WaitGroup
}

// startServer serves the trim service, as trimsvc does, on n listeners on
// 127.0.0.1, answering with instance id (plus the listener index when n>1).
func startServer(tb testing.TB, id string, n int, svc trimsvc.Service, opts ...grpc.ServerOption) *server {
	tb.Helper()
	if svc == nil {
		var err error
		if svc, err = trimsvc.New(trimsvc.DefaultMaxInputBytes); err != nil {
			tb.Fatal(err)
		}
	}
	s := &server{grpc: grpc.NewServer(opts...)}
	pb.RegisterTrimServer(s.grpc, trim.NewGRPCServer(trimsvc.NewServerSet(svc), id, log.NewNopLogger()))
	for range n {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		s.addrs = append(s.addrs, lis.Addr().String())
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			_ = s.grpc.Serve(lis)
		}()
	}
	tb.Cleanup(s.stop)
	return s
}

func (s *server) stop() {
	s.grpc.Stop()
	s.wg.Wait()
}

// startServers starts n single-listener servers, ids trim-0 .. trim-n-1.
func startServers(tb testing.TB, n int) []string {
	var addrs []string
	for i := range n {
		addrs = append(addrs, startServer(tb, fmt.Sprintf("trim-%d", i), 1, nil).addrs[0])
	}
	return addrs
}

// mtls is a CA and the certificates of in-process mTLS servers and their
// callers, made with the real consul tls commands.
type mtls struct {
	caFile                string
	serverCert, serverKey string
	callerCert, callerKey string
	servers               []string
}

// startMTLSServers starts n single-listener servers that require client
// certificates from their CA.
func startMTLSServers(tb testing.TB, n int) mtls {
	tb.Helper()
	ca, err := pki.NewCA(tb.TempDir(), "ca")
	if err != nil {
		tb.Fatal(err)
	}
	m := mtls{caFile: ca.File}
	srv, err := ca.LoopbackServer("server")
	if err != nil {
		tb.Fatal(err)
	}
	caller, err := ca.Issue(pki.Leaf{Name: "caller", Usage: pki.Client})
	if err != nil {
		tb.Fatal(err)
	}
	m.serverCert, m.serverKey, m.callerCert, m.callerKey = srv.CertFile, srv.KeyFile, caller.CertFile, caller.KeyFile
	certs, err := tlsfiles.LoadCerts(m.serverCert, m.serverKey, m.caFile)
	if err != nil {
		tb.Fatal(err)
	}
	for i := range n {
		m.servers = append(m.servers, startServer(tb, fmt.Sprintf("mtls-%d", i), 1, nil, tlsfiles.ServerCreds(certs)...).addrs[0])
	}
	return m
}

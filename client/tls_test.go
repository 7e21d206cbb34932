package client_test

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/trimkit/trimkit/internal/tlsfiles"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/internal/proc"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/sd"
)

// copyTo copies src to dst atomically (a temporary file, then rename), as
// a certificate rotation would.
func copyTo(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst+".tmp", b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dst+".tmp", dst); err != nil {
		t.Fatal(err)
	}
}

// servedSerial is the serial of the certificate addr presents to a new
// connection.
func servedSerial(t *testing.T, addr string, trust *tlsfiles.Certs) string {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, tlsfiles.ClientTLS(trust, "127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// TestMutualTLSRotationUnderLoad calls two mTLS instances through the full
// secure stack (Consul over TLS with the caller's least-privilege token,
// mTLS to the instances) under open-loop load, and rotates every
// certificate on disk meanwhile: one instance notices the change itself,
// the other is told with SIGHUP. No call may fail, and new connections get
// the new certificates.
func TestMutualTLSRotationUnderLoad(t *testing.T) {
	s := testenv.SecureConsul(t)
	st := s.ServiceTLS(t)
	dir := t.TempDir()
	var insts []*proc.Trimsvc
	files := func(name string) (string, string) {
		return filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	}
	issue := func(kind, name string) {
		is := st.Server(t, name)
		if kind == "client" {
			is = st.Client(t, name)
		}
		certFile, keyFile := files(name)
		copyTo(t, is.CertFile, certFile)
		copyTo(t, is.KeyFile, keyFile)
	}
	var ids []string
	for _, name := range []string{"svc-0", "svc-1"} {
		issue("server", name)
		certFile, keyFile := files(name)
		in := testenv.StartTrimsvc(t, bins.Trimsvc(t), s.URL(), append(append(s.ConsulTLSFlags(), "-consul-token-file", s.TrimsvcTokenFile),
			st.InstanceArgs(certFile, keyFile)...)...)
		insts = append(insts, in)
		ids = append(ids, in.ID)
	}
	s.WaitPassing("trimsvc", ids...)
	issue("client", "caller")
	callerCert, callerKey := files("caller")
	c := newClient(t, client.Config{
		Consul: sd.ConsulConfig{
			Address: s.URL(), TokenFile: s.ClientTokenFile,
			CAFile: s.Security.CA.CertFile, CertFile: s.Security.CLICertFile, KeyFile: s.Security.CLIKeyFile,
		},
		CallConfig: client.CallConfig{TLS: client.TLS{CAFile: st.CA.File, CertFile: callerCert, KeyFile: callerKey}},
	})
	waitInstances(t, c.Endpoint(), 2)
	trust, err := tlsfiles.LoadCerts("", "", st.CA.File)
	if err != nil {
		t.Fatal(err)
	}
	before := []string{servedSerial(t, insts[0].Addr, trust), servedSerial(t, insts[1].Addr, trust)}

	load := loadgen.Start(context.Background(), c.Endpoint(), "r o t a t e", loadgen.Options{Rate: 200})
	time.Sleep(500 * time.Millisecond)
	issue("server", "svc-0")
	issue("server", "svc-1")
	issue("client", "caller")
	if err := insts[1].Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if _, err := insts[1].WaitLine("SIGHUP: TLS files reloaded", 10*time.Second); err != nil {
		t.Error(err)
	}
	// Each instance presents its new certificate to a new connection: at
	// once after SIGHUP, within a second (the next look at the files)
	// otherwise.
	for i, in := range insts {
		deadline := time.Now().Add(10 * time.Second)
		for servedSerial(t, in.Addr, trust) == before[i] {
			if time.Now().After(deadline) {
				t.Fatalf("instance %d still presents its old certificate 10s after the rotation", i)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// A new instance, dialled after the rotation, takes the caller's new
	// certificate.
	issue("server", "svc-2")
	certFile, keyFile := files("svc-2")
	joined := testenv.StartTrimsvc(t, bins.Trimsvc(t), s.URL(), append(append(s.ConsulTLSFlags(), "-consul-token-file", s.TrimsvcTokenFile),
		st.InstanceArgs(certFile, keyFile)...)...)
	s.WaitPassing("trimsvc", append(ids, joined.ID)...)
	firstAnswer(t, c.Endpoint(), joined.ID)
	calls, _ := load.Stop()
	if want, have := 0, failures(t, calls); want != have {
		t.Errorf("failures during the rotation: want %d, have %d of %d", want, have, len(calls))
	}
	t.Logf("%d calls over mutual TLS while every certificate rotated, 0 failed", len(calls))
}

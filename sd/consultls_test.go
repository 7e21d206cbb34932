package sd_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	stdlog "log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-kit/log"

	"github.com/trimkit/trimkit/internal/pki"
	"github.com/trimkit/trimkit/sd"
)

// copyFile copies src over dst atomically, as a rotation would.
func copyFile(t *testing.T, dst, src string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFile(dst, b); err != nil {
		t.Fatal(err)
	}
}

// The CA and client certificate files of the Consul connection are read
// again when they change, as the gRPC side's are: a rotated agent CA or
// client certificate needs no restart.
func TestConsulTLSFilesAreReadAgain(t *testing.T) {
	clearConsulEnv(t)
	dir := t.TempDir()
	agentCA, err := pki.NewCA(filepath.Join(dir, "agent-ca"), "agent-ca")
	if err != nil {
		t.Fatal(err)
	}
	clientCA, err := pki.NewCA(filepath.Join(dir, "client-ca"), "client-ca")
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA(filepath.Join(dir, "other"), "other")
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := agentCA.LoopbackServer("agent")
	if err != nil {
		t.Fatal(err)
	}
	good, err := clientCA.Issue(pki.Leaf{Name: "good", Usage: pki.Client})
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := other.Issue(pki.Leaf{Name: "stranger", Usage: pki.Client})
	if err != nil {
		t.Fatal(err)
	}

	stub := newAgentStub("")
	stub.services[validRegistration().ID] = struct{}{}
	srv := httptest.NewUnstartedServer(stub)
	clients := x509.NewCertPool()
	clients.AddCert(clientCA.Cert)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{*serverCert.TLS()}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clients}
	srv.Config.ErrorLog = stdlog.New(io.Discard, "", 0) // the refused handshakes
	srv.StartTLS()
	t.Cleanup(srv.Close)

	caFile, certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	copyFile(t, caFile, other.File) // the wrong CA
	copyFile(t, certFile, stranger.CertFile)
	copyFile(t, keyFile, stranger.KeyFile)
	consul, err := sd.ConsulConfig{Address: srv.URL, CAFile: caFile, CertFile: certFile, KeyFile: keyFile}.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(consul.(interface{ CloseIdleConnections() }).CloseIdleConnections)
	r, err := sd.NewRegistrar(consul, validRegistration(), log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	lookup := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := r.Registered(ctx)
		return err
	}
	if err := lookup(); !sd.Permanent(err) {
		t.Fatalf("the wrong CA: want a verification error, have %v", err)
	}
	copyFile(t, caFile, agentCA.File)
	waitFor(t, 5*time.Second, "the agent verified with the new CA, refusing the client certificate", func() bool {
		err := lookup()
		return err != nil && !isVerify(err)
	})
	copyFile(t, certFile, good.CertFile)
	copyFile(t, keyFile, good.KeyFile)
	waitFor(t, 5*time.Second, "the agent answered the new client certificate", func() bool { return lookup() == nil })
}

// isVerify reports whether err is this side's verification of the agent's
// certificate failing.
func isVerify(err error) bool {
	var verify *tls.CertificateVerificationError
	return errors.As(err, &verify)
}

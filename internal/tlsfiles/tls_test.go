package tlsfiles

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCA signs certificates for tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // the CA certificate, PEM
}

// newTestCA makes a CA and writes its certificate to dir/name.pem.
func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, file: filepath.Join(dir, name+".pem")}
	write(t, ca.file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return ca
}

// serveTLS accepts connections with server's certificates until the test
// ends, hands each one that completes its handshake to handshaken (if not
// nil), closes it, and returns the address.
func serveTLS(t *testing.T, server *Certs, handshaken func(*tls.Conn)) string {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", ServerTLS(server))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			tc := conn.(*tls.Conn)
			if tc.Handshake() == nil && handshaken != nil {
				handshaken(tc)
			}
			conn.Close()
		}
	}()
	return lis.Addr().String()
}

// leaf writes a certificate with serial for 127.0.0.1, good for serving and
// for calling, and its key, into dir/name.pem and dir/name-key.pem.
func (ca *testCA) leaf(t *testing.T, dir, name string, serial int64) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		KeyUsage: x509.KeyUsageDigitalSignature, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	write(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	write(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	return certFile, keyFile
}

// write replaces path atomically, as a rotation would.
func write(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func serial(c *Certs) int64 {
	cert, _ := c.current()
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	return leaf.SerialNumber.Int64()
}

// stale lets the next handshake look at the files again without waiting
// out reloadCheck.
func stale(c *Certs) {
	c.mu.Lock()
	c.checked = time.Time{}
	c.mu.Unlock()
}

func TestCertsReloadWhenTheFilesChange(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "ca")
	caFile := ca.file
	certFile, keyFile := ca.leaf(t, dir, "server", 1)
	c, err := LoadCerts(certFile, keyFile, caFile)
	if err != nil {
		t.Fatal(err)
	}
	if want, have := int64(1), serial(c); want != have {
		t.Fatalf("serial: want %d, have %d", want, have)
	}
	// Rotated on disk: read again at the next look.
	ca.leaf(t, dir, "server", 2)
	stale(c)
	if want, have := int64(2), serial(c); want != have {
		t.Errorf("after rotation: want serial %d, have %d", want, have)
	}
	// A broken rotation keeps what was loaded last, and Reload says why.
	write(t, certFile, []byte("not a certificate"))
	stale(c)
	if want, have := int64(2), serial(c); want != have {
		t.Errorf("after a broken rotation: want serial %d kept, have %d", want, have)
	}
	if err := c.Reload(); err == nil {
		t.Error("Reload of a broken file: want an error")
	}
	// A rotation whose certificate loads but whose CA file is broken keeps
	// the whole set loaded last, not the new certificate with the old CA.
	ca.leaf(t, dir, "server", 3)
	write(t, caFile, []byte("not a CA"))
	if err := c.Reload(); err == nil {
		t.Error("Reload of a broken CA file: want an error")
	}
	if want, have := int64(2), serial(c); want != have {
		t.Errorf("after a rotation with a broken CA: want serial %d kept, have %d", want, have)
	}
	if _, err := LoadCerts(certFile, "", ""); err == nil {
		t.Error("a certificate without its key: want an error")
	}
}

func TestServerPresentsTheRotatedCertificate(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "ca")
	caFile := ca.file
	certFile, keyFile := ca.leaf(t, dir, "server", 1)
	server, err := LoadCerts(certFile, keyFile, "")
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, server, nil)
	trust, err := LoadCerts("", "", caFile)
	if err != nil {
		t.Fatal(err)
	}
	presented := func() int64 {
		conn, err := tls.Dial("tcp", addr, ClientTLS(trust, "127.0.0.1"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	if want, have := int64(1), presented(); want != have {
		t.Fatalf("want serial %d, have %d", want, have)
	}
	ca.leaf(t, dir, "server", 2)
	stale(server)
	if want, have := int64(2), presented(); want != have {
		t.Errorf("after rotation the server presents serial %d, want %d", have, want)
	}
	// A client that trusts another CA refuses it.
	distrust, err := LoadCerts("", "", newTestCA(t, dir, "other").file)
	if err != nil {
		t.Fatal(err)
	}
	if conn, err := tls.Dial("tcp", addr, ClientTLS(distrust, "127.0.0.1")); err == nil {
		conn.Close()
		t.Error("a client trusting another CA accepted the server")
	}
}

func TestClientPresentsTheRotatedCertificate(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "ca")
	caFile := ca.file
	serverCert, serverKey := ca.leaf(t, dir, "server", 1)
	server, err := LoadCerts(serverCert, serverKey, caFile)
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan int64, 4)
	addr := serveTLS(t, server, func(tc *tls.Conn) {
		if peers := tc.ConnectionState().PeerCertificates; len(peers) > 0 {
			seen <- peers[0].SerialNumber.Int64()
		}
	})
	clientCert, clientKey := ca.leaf(t, dir, "client", 10)
	client, err := LoadCerts(clientCert, clientKey, caFile)
	if err != nil {
		t.Fatal(err)
	}
	dial := func() int64 {
		conn, err := tls.Dial("tcp", addr, ClientTLS(client, "127.0.0.1"))
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
		select {
		case s := <-seen:
			return s
		case <-time.After(10 * time.Second):
			t.Fatal("the server saw no client certificate")
			return 0
		}
	}
	if want, have := int64(10), dial(); want != have {
		t.Fatalf("want serial %d, have %d", want, have)
	}
	ca.leaf(t, dir, "client", 11)
	stale(client)
	if want, have := int64(11), dial(); want != have {
		t.Errorf("after rotation the client presented serial %d, want %d", have, want)
	}
}

// Certs with only a CA cannot serve: every handshake fails with a reason,
// none panics.
func TestServerWithoutACertificateRefusesHandshakes(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "ca")
	onlyCA, err := LoadCerts("", "", ca.file)
	if err != nil {
		t.Fatal(err)
	}
	_, err = ServerTLS(onlyCA).GetCertificate(&tls.ClientHelloInfo{})
	if err == nil || !strings.Contains(err.Error(), "no server certificate") {
		t.Errorf("want an error saying there is no server certificate, have %v", err)
	}
}

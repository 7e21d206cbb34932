package transport

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// reloadCheck is how often, at most, a handshake looks at the files again.
const reloadCheck = time.Second

// Certs are a certificate, its key and a CA bundle read from files and read
// again when they change on disk (checked at a handshake, at most once a
// second) or when Reload is called (on SIGHUP, say), so that rotating them
// needs no restart. A rotation that fails to load (a key that does not
// match, a half-written file) keeps the files loaded last, and Reload says
// why.
type Certs struct {
	certFile, keyFile, caFile string

	mu      sync.Mutex
	cert    *tls.Certificate // nil without certFile
	pool    *x509.CertPool   // nil without caFile
	seen    []byte           // the files' stat, to notice a change
	checked time.Time
}

// LoadCerts reads the files; certFile and keyFile go together, caFile
// stands alone, and any may be empty.
func LoadCerts(certFile, keyFile, caFile string) (*Certs, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("a TLS certificate needs both its certificate and its key file")
	}
	c := &Certs{certFile: certFile, keyFile: keyFile, caFile: caFile}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload reads the files again now.
func (c *Certs) Reload() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.load()
}

// load reads the files and takes them only when all of them load, so
// that a failed rotation keeps the whole set loaded last; c.mu is held.
func (c *Certs) load() error {
	c.checked = time.Now()
	c.seen = c.stat()
	cert, pool := c.cert, c.pool
	if c.certFile != "" {
		kp, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
		if err != nil {
			return fmt.Errorf("load TLS certificate %s and key %s: %w", c.certFile, c.keyFile, err)
		}
		cert = &kp
	}
	if c.caFile != "" {
		pem, err := os.ReadFile(c.caFile)
		if err != nil {
			return fmt.Errorf("load TLS CA file: %w", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("load TLS CA file %s: no certificate in it", c.caFile)
		}
	}
	c.cert, c.pool = cert, pool
	return nil
}

// stat sums up the files' sizes and modification times.
func (c *Certs) stat() []byte {
	var b bytes.Buffer
	for _, f := range []string{c.certFile, c.keyFile, c.caFile} {
		if f == "" {
			continue
		}
		if info, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, "%d %d;", info.Size(), info.ModTime().UnixNano())
		}
	}
	return b.Bytes()
}

// current returns the certificate and pool, reading the files again first
// when they changed since they were last read.
func (c *Certs) current() (*tls.Certificate, *x509.CertPool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.checked) >= reloadCheck {
		c.checked = time.Now()
		if !bytes.Equal(c.stat(), c.seen) {
			_ = c.load() // on failure, keep what was loaded last
		}
	}
	return c.cert, c.pool
}

// ClientTLS is a client's TLS configuration: the server's certificate is
// verified against c's CA (the system's roots without one) for serverName
// (the address dialled when empty), and c's certificate, if any, is
// presented. With a CA of c's own, the verification reads the current CA,
// so that rotating it needs no restart either.
func ClientTLS(c *Certs, serverName string) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if c.certFile != "" {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, _ := c.current()
			return cert, nil
		}
	}
	if c.caFile != "" {
		// Go's own verification, against the pool of the moment.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			_, pool := c.current()
			if len(cs.PeerCertificates) == 0 {
				return errors.New("tls: the server presented no certificate")
			}
			if err := verifyChain(cs.PeerCertificates, x509.VerifyOptions{Roots: pool, DNSName: cs.ServerName}); err != nil {
				return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
			}
			return nil
		}
	}
	return cfg
}

// verifyChain verifies the leaf of a presented chain (leaf first, then the
// intermediates it was sent with) as opts say; chain must not be empty.
func verifyChain(chain []*x509.Certificate, opts x509.VerifyOptions) error {
	opts.Intermediates = x509.NewCertPool()
	for _, ic := range chain[1:] {
		opts.Intermediates.AddCert(ic)
	}
	_, err := chain[0].Verify(opts)
	return err
}

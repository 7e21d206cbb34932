package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
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
	ca      *caBundle        // nil without caFile
	seen    string           // the files' Stamp, to notice a change
	checked time.Time
}

// caBundle is one load of the CA file. It is never modified, only
// replaced, so that what was verified against it can tell that it changed.
type caBundle struct {
	pool *x509.CertPool
	// roots holds the DER of every certificate in pool: a chain verified
	// against an earlier bundle is still trusted only if its root is here.
	roots map[string]struct{}
	certs []*x509.Certificate // pool's
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
	c.seen = Stamp(c.certFile, c.keyFile, c.caFile)
	cert, ca := c.cert, c.ca
	if c.certFile != "" {
		kp, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
		if err != nil {
			return fmt.Errorf("load TLS certificate %s and key %s: %w", c.certFile, c.keyFile, err)
		}
		cert = &kp
	}
	if c.caFile != "" {
		b, err := loadCA(c.caFile)
		if err != nil {
			return err
		}
		ca = b
	}
	c.cert, c.ca = cert, ca
	return nil
}

// loadCA reads a PEM bundle of CA certificates.
func loadCA(file string) (*caBundle, error) {
	rest, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("load TLS CA file: %w", err)
	}
	b := &caBundle{pool: x509.NewCertPool(), roots: map[string]struct{}{}}
	for len(rest) > 0 {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("load TLS CA file %s: %w", file, err)
		}
		b.pool.AddCert(cert)
		b.roots[string(cert.Raw)] = struct{}{}
		b.certs = append(b.certs, cert)
	}
	if len(b.roots) == 0 {
		return nil, fmt.Errorf("load TLS CA file %s: no certificate in it", file)
	}
	return b, nil
}

// current returns the certificate and CA bundle, reading the files again
// first when they changed since they were last read.
func (c *Certs) current() (*tls.Certificate, *caBundle) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.checked) >= reloadCheck {
		c.checked = time.Now()
		if Stamp(c.certFile, c.keyFile, c.caFile) != c.seen {
			_ = c.load() // on failure, keep what was loaded last
		}
	}
	return c.cert, c.ca
}

// ClientTLS is a client's TLS configuration for a connection to name, the
// host dialled (a DNS name or an IP address) or the name its certificate
// must hold: the server's certificate must verify against c's CA (the
// system's roots without one), hold name (as an IP SAN for an IP, a DNS
// SAN otherwise) and list the server-auth extended key usage; c's
// certificate, if any, is presented. It reads c's current files at each
// handshake, so that rotating them needs no restart. gRPC callers want
// ClientCreds, which finds name from the address dialled.
func ClientTLS(c *Certs, name string) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: name,
		// Verified below, against the CA of the moment and for name, which
		// Go's own check cannot do: it reads the roots once, and for an IP
		// it sends no server name that VerifyConnection could read back.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyServer(c, name, cs.PeerCertificates)
		},
	}
	if c.certFile != "" {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, _ := c.current()
			return cert, nil
		}
	}
	return cfg
}

// verifyServer verifies a server's presented chain for name.
func verifyServer(c *Certs, name string, chain []*x509.Certificate) error {
	if name == "" {
		return errors.New("tls: no server name or address to verify the server's certificate for")
	}
	if len(chain) == 0 {
		return errors.New("tls: the server presented no certificate")
	}
	var roots *x509.CertPool // nil: the system's
	if _, ca := c.current(); ca != nil {
		roots = ca.pool
	}
	err := verifyChain(chain, x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err == nil {
		err = requireUsage(chain[0], x509.ExtKeyUsageServerAuth)
	}
	if err != nil {
		return &tls.CertificateVerificationError{UnverifiedCertificates: chain, Err: err}
	}
	return nil
}

// requireUsage says whether leaf lists usage among its extended key usages.
// Go's verification accepts a certificate that lists none for any usage;
// here a certificate is for serving, or for calling, only if it says so.
func requireUsage(leaf *x509.Certificate, usage x509.ExtKeyUsage) error {
	if slices.Contains(leaf.ExtKeyUsage, usage) {
		return nil
	}
	name := map[x509.ExtKeyUsage]string{x509.ExtKeyUsageServerAuth: "server", x509.ExtKeyUsageClientAuth: "client"}[usage]
	return fmt.Errorf("x509: certificate %q does not list the %s-auth extended key usage", leaf.Subject.CommonName, name)
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

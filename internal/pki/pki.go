package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// CA is a certificate authority: a root, or an intermediate signed by
// another CA.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// File is the CA's certificate, PEM: what verifiers trust (for a root).
	File   string
	dir    string
	parent *CA // nil for a root
}

// Usage is what a leaf certificate is for, as its extended key usages.
type Usage int

const (
	// Server is a server certificate: server-auth only.
	Server Usage = iota
	// Client is a client certificate: client-auth only.
	Client
	// Both lists server-auth and client-auth.
	Both
	// NoUsage lists no extended key usage at all (which Go's verification
	// takes as any usage).
	NoUsage
)

// Leaf describes a certificate to issue.
type Leaf struct {
	Name      string   // the common name, and the file names' stem
	DNSNames  []string // SANs
	IPs       []net.IP // SANs
	Usage     Usage
	NotBefore time.Time // default: an hour ago
	NotAfter  time.Time // default: a year from now
}

// Issued is a certificate and its key, in memory and as PEM files.
type Issued struct {
	Cert     *x509.Certificate
	Key      crypto.Signer
	CertFile string // the certificate alone
	KeyFile  string
	// ChainFile is the certificate followed by the intermediates up to,
	// not including, the root; equal to CertFile under a root.
	ChainFile string
}

// NewCA makes a self-signed root CA whose files go in dir (made if needed).
func NewCA(dir, name string) (*CA, error) {
	return newCA(dir, name, nil)
}

// Intermediate makes an intermediate CA signed by ca.
func (ca *CA) Intermediate(name string) (*CA, error) {
	return newCA(ca.dir, name, ca)
}

func newCA(dir, name string, parent *CA) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(5, 0, 0),
	}
	signer, signerKey := tmpl, crypto.Signer(key)
	if parent != nil {
		signer, signerKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, key.Public(), signerKey)
	if err != nil {
		return nil, fmt.Errorf("create CA %s: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	ca := &CA{Cert: cert, Key: key, File: filepath.Join(dir, name+".pem"), dir: dir, parent: parent}
	return ca, WriteFile(ca.File, pemCert(der))
}

// Issue signs a leaf certificate and writes it, its chain and its key into
// the CA's directory as <name>.pem, <name>-chain.pem and <name>-key.pem.
func (ca *CA) Issue(l Leaf) (*Issued, error) {
	if l.Name == "" {
		return nil, errors.New("pki: a leaf needs a name")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: l.Name},
		DNSNames:     l.DNSNames,
		IPAddresses:  l.IPs,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		NotBefore:    l.NotBefore,
		NotAfter:     l.NotAfter,
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().AddDate(1, 0, 0)
	}
	switch l.Usage {
	case Server:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	case Client:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	case Both:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("issue %s: %w", l.Name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return ca.write(l.Name, cert, key)
}

// LoopbackServer issues a server certificate named name for 127.0.0.1 and
// localhost, what a test or `make cluster` instance on loopback serves.
func (ca *CA) LoopbackServer(name string) (*Issued, error) {
	return ca.Issue(Leaf{Name: name, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"}, Usage: Server})
}

// Forge builds the certificate of an attack on a server that trusts what
// it has seen before by a certificate's signature: a certificate over the
// attacker's own key, with victim's subject, names and usages, whose
// signature field holds victim's signature bytes. It cannot verify (the
// signature is over another certificate); a server that checks only the
// signature's bytes takes it for victim. For tests.
func Forge(victim *x509.Certificate) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: victim.SerialNumber, Subject: victim.Subject, NotBefore: victim.NotBefore,
		NotAfter: victim.NotAfter, ExtKeyUsage: victim.ExtKeyUsage, KeyUsage: victim.KeyUsage,
		DNSNames: victim.DNSNames, IPAddresses: victim.IPAddresses}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	var cert struct {
		TBS       asn1.RawValue
		Algorithm pkix.AlgorithmIdentifier
		Signature asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &cert); err != nil {
		return nil, err
	}
	cert.Signature = asn1.BitString{Bytes: victim.Signature, BitLength: 8 * len(victim.Signature)}
	forged, err := asn1.Marshal(cert)
	if err != nil {
		return nil, err
	}
	parsed, err := x509.ParseCertificate(forged)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(parsed.Signature, victim.Signature) {
		return nil, errors.New("pki: the forged certificate does not carry the victim's signature")
	}
	return &tls.Certificate{Certificate: [][]byte{forged}, PrivateKey: key, Leaf: parsed}, nil
}

// TLS is is's certificate and key for presenting, followed by the
// certificates of chain (intermediates).
func (is *Issued) TLS(chain ...*x509.Certificate) *tls.Certificate {
	c := &tls.Certificate{Certificate: [][]byte{is.Cert.Raw}, PrivateKey: is.Key, Leaf: is.Cert}
	for _, ic := range chain {
		c.Certificate = append(c.Certificate, ic.Raw)
	}
	return c
}

// ClientConfig is a TLS configuration that trusts ca (a root) and
// presents cert, nil for none, whatever the server asks: a caller, good or
// not, in tests.
func (ca *CA) ClientConfig(cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: x509.NewCertPool()}
	cfg.RootCAs.AddCert(ca.Cert)
	if cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return cfg
}

// write writes cert (signed by ca) and key as name's files.
func (ca *CA) write(name string, cert *x509.Certificate, key crypto.Signer) (*Issued, error) {
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	is := &Issued{Cert: cert, Key: key,
		CertFile:  filepath.Join(ca.dir, name+".pem"),
		KeyFile:   filepath.Join(ca.dir, name+"-key.pem"),
		ChainFile: filepath.Join(ca.dir, name+"-chain.pem"),
	}
	chain := pemCert(cert.Raw)
	for p := ca; p.parent != nil; p = p.parent {
		chain = append(chain, pemCert(p.Cert.Raw)...)
	}
	for file, b := range map[string][]byte{
		is.CertFile:  pemCert(cert.Raw),
		is.ChainFile: chain,
		is.KeyFile:   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
	} {
		if err := WriteFile(file, b); err != nil {
			return nil, err
		}
	}
	return is, nil
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	return n.Add(n, big.NewInt(1))
}

// WriteFile replaces path atomically (a temporary file, then a rename), as
// a certificate rotation would, readable by its owner only.
func WriteFile(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Attack is a client certificate that a server requiring mutual TLS with
// certificates of one CA must refuse, and the TLS alert it refuses it with
// as the caller reads it. Cert nil is no certificate at all.
type Attack struct {
	Name  string
	Cert  *tls.Certificate
	Alert string
}

// Attacks returns every certificate attack the mutual TLS tests make on a
// server that trusts ca, good being a legitimate client certificate of ca
// that it has already accepted: good's signature over another key,
// another CA's (made in dir), none, server auth only, and no extended key
// usage. For tests.
func Attacks(ca *CA, good *Issued, dir string) ([]Attack, error) {
	forged, err := Forge(good.Cert)
	if err != nil {
		return nil, err
	}
	other, err := NewCA(dir, "other")
	if err != nil {
		return nil, err
	}
	stranger, err := other.Issue(Leaf{Name: "stranger", Usage: Client})
	if err != nil {
		return nil, err
	}
	serverOnly, err := ca.Issue(Leaf{Name: "server-only", Usage: Server})
	if err != nil {
		return nil, err
	}
	noUsage, err := ca.Issue(Leaf{Name: "no-usage", Usage: NoUsage})
	if err != nil {
		return nil, err
	}
	return []Attack{
		{"forged signature", forged, "tls: unknown certificate authority"},
		{"another CA", stranger.TLS(), "tls: unknown certificate authority"},
		{"no certificate", nil, "tls: certificate required"},
		{"server-auth usage only", serverOnly.TLS(), "tls: bad certificate"},
		{"no extended key usage", noUsage.TLS(), "tls: bad certificate"},
	}, nil
}

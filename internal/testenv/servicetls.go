package testenv

import (
	"path/filepath"
	"testing"

	"github.com/trimkit/trimkit/internal/pki"
)

// ServiceTLS is a CA of the service's own for mutual TLS between callers
// and instances, apart from Consul's (as `make cluster` has it): instances
// serve with its server certificates and require its client certificates,
// and let Consul's agents in for health checks only.
type ServiceTLS struct {
	CA *pki.CA
	// ConsulCA is the agents' CA file, whose certificates the instances
	// accept for health checks.
	ConsulCA string
}

// ServiceTLS makes a service CA beside s's Consul CA.
func (s *Secure) ServiceTLS(t testing.TB) *ServiceTLS {
	t.Helper()
	ca, err := pki.NewCA(filepath.Join(t.TempDir(), "service-ca"), "service-ca")
	if err != nil {
		t.Fatal(err)
	}
	return &ServiceTLS{CA: ca, ConsulCA: s.Security.CA.CertFile}
}

// Server issues a server certificate for 127.0.0.1 named name.
func (st *ServiceTLS) Server(t testing.TB, name string) *pki.Issued {
	t.Helper()
	is, err := st.CA.LoopbackServer(name)
	if err != nil {
		t.Fatal(err)
	}
	return is
}

// Client issues a client certificate named name.
func (st *ServiceTLS) Client(t testing.TB, name string) *pki.Issued {
	t.Helper()
	is, err := st.CA.Issue(pki.Leaf{Name: name, Usage: pki.Client})
	if err != nil {
		t.Fatal(err)
	}
	return is
}

// InstanceArgs are trimsvc's flags for serving mutual TLS with certFile
// and keyFile: callers' certificates from the service CA, the agents' for
// health checks only, and a check that cannot verify a certificate of a CA
// the agents do not know.
func (st *ServiceTLS) InstanceArgs(certFile, keyFile string) []string {
	return []string{"-tls-cert-file", certFile, "-tls-key-file", keyFile, "-tls-client-ca-file", st.CA.File,
		"-tls-check-ca-file", st.ConsulCA, "-check-tls-skip-verify"}
}

package testenv

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/trimkit/trimkit/internal/localconsul"
)

// Secure is a dev agent with TLS (HTTPS only, client certificates
// required) and default-deny ACLs, and what a service or a caller needs to
// talk to it.
type Secure struct {
	*Agent
	Security *localconsul.Security
	Tokens   localconsul.Tokens
	// TrimsvcTokenFile and ClientTokenFile hold the least-privilege tokens.
	TrimsvcTokenFile, ClientTokenFile string
}

// SecureConsul starts a secure dev agent and sets up its ACLs for the
// service trimsvc; it is stopped when the test ends.
func SecureConsul(t testing.TB) *Secure {
	t.Helper()
	dir := t.TempDir()
	sec, err := localconsul.NewSecurity(ConsulBinary(t), dir)
	if err != nil {
		t.Fatal(err)
	}
	la, err := localconsul.New(ConsulBinary(t), filepath.Join(dir, "agent"), localconsul.Options{Security: sec})
	if err != nil {
		t.Fatal(err)
	}
	a := Adopt(t, la)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tokens, err := sec.SetupACL(ctx, a.API(), "trimsvc")
	if err != nil {
		t.Fatal(err)
	}
	s := &Secure{Agent: a, Security: sec, Tokens: tokens,
		TrimsvcTokenFile: filepath.Join(dir, "trimsvc.token"), ClientTokenFile: filepath.Join(dir, "client.token")}
	for f, tok := range map[string]string{s.TrimsvcTokenFile: tokens.Trimsvc, s.ClientTokenFile: tokens.Client} {
		if err := os.WriteFile(f, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// ConsulTLSFlags are the flags that reach the agent over TLS, the client
// certificate included, without a token.
func (s *Secure) ConsulTLSFlags() []string {
	return []string{"-consul-addr", s.URL(), "-consul-ca-file", s.Security.CA.CertFile,
		"-consul-client-cert", s.Security.CLICertFile, "-consul-client-key", s.Security.CLIKeyFile}
}

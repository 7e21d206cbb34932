package sd_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/go-kit/log"

	"github.com/trimkit/trimkit/internal/localconsul"
	"github.com/trimkit/trimkit/internal/pki"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/sd"
)

// rotateToken rotates the token in file as operators do, through the
// management token: a new token with the same policies written to the
// file (atomically), then the old one deleted. It returns the new secret.
func rotateToken(t *testing.T, s *testenv.Secure, file string) string {
	t.Helper()
	secret, err := localconsul.RotateTokenFile(context.Background(), s.API(), nil, file)
	if err != nil {
		t.Fatal(err)
	}
	return secret
}

// A caller whose token file is rotated (the old token deleted) goes on
// seeing the catalog change: its watch sends the new token.
func TestInstancerFollowsARotatedTokenFile(t *testing.T) {
	clearConsulEnv(t)
	s := testenv.SecureConsul(t)
	c := s.API()
	file := filepath.Join(t.TempDir(), "client.token")
	if err := pki.WriteFile(file, []byte(s.Tokens.Client+"\n")); err != nil {
		t.Fatal(err)
	}
	if err := c.Agent().ServiceRegister(apiRegistration{"a", "trimsvc", nil, "127.0.0.1", 1001}.toAPI()); err != nil {
		t.Fatal(err)
	}
	consul, err := sd.ConsulConfig{Address: s.URL(), TokenFile: file,
		CAFile: s.Security.CA.CertFile, CertFile: s.Security.CLICertFile, KeyFile: s.Security.CLIKeyFile}.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(consul.(interface{ CloseIdleConnections() }).CloseIdleConnections)
	in, err := sd.NewInstancerWith(consul, log.NewNopLogger(), "trimsvc", nil, true, sd.QueryRate(0, 1))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Stop()
	sees := func(want ...string) func() bool {
		return func() bool { st := in.State(); return st.Err == nil && slices.Equal(st.Instances, want) }
	}
	waitFor(t, 10*time.Second, "the first instance", sees("127.0.0.1:1001"))

	rotateToken(t, s, file)
	if err := c.Agent().ServiceRegister(apiRegistration{"b", "trimsvc", nil, "127.0.0.1", 1002}.toAPI()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the instance registered after the rotation", sees("127.0.0.1:1001", "127.0.0.1:1002"))
	if err := c.Agent().ServiceDeregister("a"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the instance deregistered after the rotation", sees("127.0.0.1:1002"))
}

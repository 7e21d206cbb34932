package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trimkit/trimkit/internal/tlsfiles"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/trimkit/trimkit/internal/cli"
	"github.com/trimkit/trimkit/internal/localconsul"
	"github.com/trimkit/trimkit/internal/proc"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/pb"
)

// stderrOf is the process's stderr so far, as one string.
func stderrOf(in interface{ Lines() []string }) string { return strings.Join(in.Lines(), "\n") }

// startRaw starts trimsvc without waiting for its listeners, for starts
// that fail: such a process may write its -addr-file and remove it again
// before anyone sees it.
func startRaw(t *testing.T, args ...string) *proc.Process {
	t.Helper()
	return testenv.Start(t, bins.Trimsvc(t), append([]string{"-grpc-addr", "127.0.0.1:0", "-http-addr", "off"}, args...)...)
}

func TestMissingOrInsufficientTokenExitsAtOnce(t *testing.T) {
	s := testenv.SecureConsul(t)
	for _, tc := range []struct {
		name  string
		token []string
	}{
		{"no token", nil},
		{"a caller's token", []string{"-consul-token-file", s.ClientTokenFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			in := startRaw(t, append(s.ConsulTLSFlags(), tc.token...)...)
			if want, have := 1, waitExit(t, in, 15*time.Second); want != have {
				t.Fatalf("exit code: want %d, have %d", want, have)
			}
			took := time.Since(start)
			out := stderrOf(in)
			for _, want := range []string{"'service:write' on \"trimsvc\"", s.URL()} {
				if !strings.Contains(out, want) {
					t.Errorf("stderr lacks %q:\n%s", want, out)
				}
			}
			for _, secret := range []string{s.Tokens.Client, s.Tokens.Trimsvc, s.Security.ManagementToken} {
				if strings.Contains(out, secret) {
					t.Errorf("stderr shows a token secret:\n%s", out)
				}
			}
			// A 403 is permanent: no retrying for -register-timeout (30s).
			t.Logf("exited after %v", took.Round(time.Millisecond))
			if took > 5*time.Second {
				t.Errorf("took %v to give up on a 403", took)
			}
		})
	}
}

func TestLeastPrivilegeTokenOverTLS(t *testing.T) {
	s := testenv.SecureConsul(t)
	secret := s.Tokens.Trimsvc
	// The token from a flag here, to prove it shows nowhere; a file (or
	// CONSUL_HTTP_TOKEN_FILE) is what production should use.
	in := startInstance(t, s.URL(), append(s.ConsulTLSFlags(), "-consul-token", secret, "-http-addr", "127.0.0.1:0")...)
	s.WaitPassing("trimsvc", in.ID)
	_, metrics := get(t, "http://"+in.HTTPAddr+"/metrics")
	if strings.Contains(metrics, secret) {
		t.Error("/metrics shows the token")
	}
	if err := in.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if want, have := 0, waitExit(t, in.Process, 15*time.Second); want != have {
		t.Errorf("exit code after SIGTERM: want %d, have %d", want, have)
	}
	if strings.Contains(stderrOf(in), secret) {
		t.Errorf("logs show the token:\n%s", stderrOf(in))
	}
	// Deregistered with the same least-privilege token.
	testenv.WaitPassing(t, s.API(), "trimsvc", localconsul.Count(0))

	// --help never shows a token, whatever the environment holds.
	t.Setenv("CONSUL_HTTP_TOKEN", secret)
	t.Setenv("TRIMSVC_CONSUL_TOKEN", secret)
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &stdout, &stderr); err == nil || strings.Contains(stdout.String()+stderr.String(), secret) {
		t.Errorf("--help shows the token (or did not print help: %v)", err)
	}
}

func TestConsulCLIEnvironmentIsHonoured(t *testing.T) {
	s := testenv.SecureConsul(t)
	t.Setenv("CONSUL_HTTP_ADDR", s.URL())
	t.Setenv("CONSUL_CACERT", s.Security.CA.CertFile)
	t.Setenv("CONSUL_CLIENT_CERT", s.Security.CLICertFile)
	t.Setenv("CONSUL_CLIENT_KEY", s.Security.CLIKeyFile)
	t.Setenv("CONSUL_HTTP_TOKEN_FILE", s.TrimsvcTokenFile)
	t.Setenv("CONSUL_TLS_SERVER_NAME", "localhost")
	// -consul-addr from the environment too: startInstance's own comes
	// first, and this one wins.
	in := startInstance(t, "unused:1", "-consul-addr", s.URL())
	s.WaitPassing("trimsvc", in.ID)
}

func TestBadConsulTLSIsAClearErrorNeverPlaintext(t *testing.T) {
	s := testenv.SecureConsul(t)
	other, err := localconsul.NewCA(testenv.ConsulBinary(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	flags := append(s.ConsulTLSFlags(), "-consul-token-file", s.TrimsvcTokenFile, "-consul-ca-file", other.CertFile)
	in := startRaw(t, flags...)
	if want, have := 1, waitExit(t, in, 15*time.Second); want != have {
		t.Fatalf("wrong CA: exit code want %d, have %d", want, have)
	}
	if out := stderrOf(in); !strings.Contains(out, "certificate signed by unknown authority") || !strings.Contains(out, s.URL()) {
		t.Errorf("wrong CA: stderr does not say so:\n%s", out)
	}
	// TLS files for a plain http:// address: refused before anything runs.
	var stdout, stderr bytes.Buffer
	err = run(context.Background(), []string{"-consul-addr", "http://" + s.HTTPAddr, "-consul-ca-file", s.Security.CA.CertFile}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "plain HTTP") {
		t.Errorf("TLS files with an http:// address: want an error saying plain HTTP, have %v", err)
	}
	// A token and a token file: which one? Say so.
	err = run(context.Background(), []string{"-consul-token", "x", "-consul-token-file", s.TrimsvcTokenFile}, &stdout, &stderr)
	if !errors.Is(err, cli.ErrUsage) {
		t.Errorf("token and token file: want a usage error, have %v", err)
	}
}

func TestMutualTLSService(t *testing.T) {
	s := testenv.SecureConsul(t)
	st := s.ServiceTLS(t)
	srv := st.Server(t, "instance")
	in := startInstance(t, s.URL(), append(append(s.ConsulTLSFlags(), "-consul-token-file", s.TrimsvcTokenFile),
		st.InstanceArgs(srv.CertFile, srv.KeyFile)...)...)
	// Consul's check runs over TLS, the agent presenting its own
	// certificate (of Consul's CA, let in for health checks only), and
	// passes.
	s.WaitPassing("trimsvc", in.ID)

	call := func(creds credentials.TransportCredentials) error {
		conn, err := grpc.NewClient(in.Addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = pb.NewTrimClient(conn).TrimSpace(ctx, &pb.TrimRequest{S: "a b"})
		return err
	}
	caller := st.Client(t, "caller")
	good, err := tlsfiles.LoadCerts(caller.CertFile, caller.KeyFile, st.CA.File)
	if err != nil {
		t.Fatal(err)
	}
	if err := call(tlsfiles.ClientCreds(good, "")); err != nil {
		t.Fatalf("a client with a certificate from the service CA: %v", err)
	}

	other, err := localconsul.NewCA(testenv.ConsulBinary(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	otherCert, otherKey, err := other.Cert("client")
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := tlsfiles.LoadCerts(otherCert, otherKey, st.CA.File)
	if err != nil {
		t.Fatal(err)
	}
	noCert, err := tlsfiles.LoadCerts("", "", st.CA.File)
	if err != nil {
		t.Fatal(err)
	}
	// The Consul agents' own certificate: let in for health checks, not
	// for the service.
	agentCert, agentKey, err := s.Security.CA.Cert("client")
	if err != nil {
		t.Fatal(err)
	}
	agent, err := tlsfiles.LoadCerts(agentCert, agentKey, st.CA.File)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		creds credentials.TransportCredentials
		want  string // in the client's error
	}{
		{"plaintext", insecure.NewCredentials(), ""},
		{"no client certificate", tlsfiles.ClientCreds(noCert, ""), "tls: certificate required"},
		{"a certificate from another CA", tlsfiles.ClientCreds(stranger, ""), "tls: unknown certificate authority"},
		{"a Consul agent's certificate", tlsfiles.ClientCreds(agent, ""), "PermissionDenied desc = a certificate of the health-check CA may call grpc.health.v1 only"},
		{"a server certificate it cannot verify", credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12}), "certificate signed by unknown authority"},
	} {
		err := call(tc.creds)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		t.Logf("%s: %v", tc.name, err)
		if tc.want != "" && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q does not say %q", tc.name, err, tc.want)
		}
	}
}

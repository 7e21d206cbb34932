package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/trimkit/trimkit/internal/proc"
	"github.com/trimkit/trimkit/internal/testenv"
)

// secureSetup is a secure agent and two trimsvc instances registered with
// their least-privilege token, serving mutual TLS when mtls is set.
func secureSetup(t *testing.T, mtls bool) (*testenv.Secure, *testenv.ServiceTLS) {
	t.Helper()
	s := testenv.SecureConsul(t)
	st := s.ServiceTLS(t)
	args := append(s.ConsulTLSFlags(), "-consul-token-file", s.TrimsvcTokenFile)
	if mtls {
		srv := st.Server(t, "instance")
		args = append(args, st.InstanceArgs(srv.CertFile, srv.KeyFile)...)
	}
	var ids []string
	for range 2 {
		in := testenv.StartTrimsvc(t, bins.Trimsvc(t), s.URL(), args...)
		ids = append(ids, in.ID)
	}
	s.WaitPassing("trimsvc", ids...)
	return s, st
}

func runClient(t *testing.T, args ...string) (*proc.Process, int) {
	t.Helper()
	p := testenv.Start(t, bins.Client(t), args...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, err := p.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return p, code
}

func TestACLFilteredAnswerIsSaidPlainly(t *testing.T) {
	s, _ := secureSetup(t, false)
	for _, tc := range []struct {
		name  string
		token []string
	}{
		{"no token", nil},
		{"a token without node:read", []string{"-consul-token-file", s.TrimsvcTokenFile}},
	} {
		p, code := runClient(t, append(s.ConsulTLSFlags(), append(tc.token, "x")...)...)
		out := strings.Join(p.Lines(), "\n")
		if code != 1 || !strings.Contains(out, "consul filtered the answer by ACLs: the token needs service:read on \"trimsvc\" and node:read") {
			t.Errorf("%s: want exit 1 saying the answer was filtered, have exit %d:\n%s", tc.name, code, out)
		}
		if strings.Contains(out, "no passing instance") {
			t.Errorf("%s: still says 'no passing instance':\n%s", tc.name, out)
		}
	}
	// The caller's own token, from a flag's file, then from the Consul
	// CLI's variable.
	if p, code := runClient(t, append(s.ConsulTLSFlags(), "-consul-token-file", s.ClientTokenFile, " a b ")...); code != 0 || p.Stdout() != "ab\n" {
		t.Errorf("with the caller's token: exit %d, %q\n%s", code, p.Stdout(), strings.Join(p.Lines(), "\n"))
	}
	t.Setenv("CONSUL_HTTP_TOKEN_FILE", s.ClientTokenFile)
	if p, code := runClient(t, append(s.ConsulTLSFlags(), " a b ")...); code != 0 || p.Stdout() != "ab\n" {
		t.Errorf("with CONSUL_HTTP_TOKEN_FILE: exit %d, %q\n%s", code, p.Stdout(), strings.Join(p.Lines(), "\n"))
	}
	// A token never shows in --help.
	t.Setenv("CONSUL_HTTP_TOKEN", s.Tokens.Client)
	var stdout, stderr bytes.Buffer
	_ = run(context.Background(), context.Background(), []string{"-h"}, &stdout, &stderr)
	if strings.Contains(stdout.String(), s.Tokens.Client) {
		t.Error("--help shows the token")
	}
}

func TestMutualTLSCalls(t *testing.T) {
	s0, st := secureSetup(t, true)
	base := append(s0.ConsulTLSFlags(), "-consul-token-file", s0.ClientTokenFile)
	caller := st.Client(t, "caller")
	p, code := runClient(t, append(base, "-tls-ca-file", st.CA.File, "-tls-cert-file", caller.CertFile, "-tls-key-file", caller.KeyFile, "-n", "20", "-json", "x")...)
	if code != 0 {
		t.Fatalf("mutual TLS: exit %d\n%s", code, strings.Join(p.Lines(), "\n"))
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"plaintext", nil, "does it require TLS?"},
		{"no client certificate", []string{"-tls-ca-file", st.CA.File}, "refused this client in the TLS handshake (certificate required)"},
		// Consul's CA is let in for health checks, and its CLI
		// certificate lists no usage.
		{"a Consul CLI certificate, not the service's", []string{"-tls-ca-file", st.CA.File, "-tls-cert-file", s0.Security.CLICertFile, "-tls-key-file", s0.Security.CLIKeyFile},
			"refused this client in the TLS handshake (bad certificate)"},
		{"trusting Consul's CA for the instances", []string{"-tls-ca-file", s0.Security.CA.CertFile, "-tls-cert-file", caller.CertFile, "-tls-key-file", caller.KeyFile},
			"certificate signed by unknown authority"},
	} {
		p, code := runClient(t, append(append(base, tc.args...), "x")...)
		if out := strings.Join(p.Lines(), "\n"); code != 1 || !strings.Contains(out, tc.want) {
			t.Errorf("%s: want exit 1 saying %q, have exit %d:\n%s", tc.name, tc.want, code, out)
		}
	}
}

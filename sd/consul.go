package sd

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"

	"github.com/hashicorp/consul/api"
)

// ConsulConfig is how to reach, trust and authenticate to a Consul agent:
// what trimsvc's and cmd/client's -consul-* flags say, and what
// client.Config carries. An empty field falls back on the Consul CLI's
// environment (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE,
// CONSUL_HTTP_SSL, CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY,
// CONSUL_TLS_SERVER_NAME), then on http://127.0.0.1:8500 without a token.
type ConsulConfig struct {
	// Address is host:port, or a URL: https://host:port speaks TLS.
	Address string
	// Token is the ACL token; TokenFile a file holding it (re-read by
	// nothing: give a new file to a new process). At most one of them.
	Token     string
	TokenFile string
	// CAFile verifies the agent's certificate; CertFile and KeyFile are
	// the client certificate an agent with verify_incoming asks for;
	// TLSServerName is the name to verify the agent's certificate against.
	CAFile, CertFile, KeyFile string
	TLSServerName             string
}

// DefaultConsulAddr is the agent a ConsulConfig with no Address reaches
// when CONSUL_HTTP_ADDR is empty too.
const DefaultConsulAddr = "127.0.0.1:8500"

// Validate reports flags that contradict each other or name missing files,
// and TLS settings (CA file, client certificate, TLS server name: fields or
// the Consul CLI's environment) for a plain-HTTP address.
func (c ConsulConfig) Validate() error {
	_, _, plain := c.apiConfig()
	return errors.Join(c.validateFields(), plain)
}

// validateFields is Validate without the look at the address.
func (c ConsulConfig) validateFields() error {
	var errs []error
	if c.Token != "" && c.TokenFile != "" {
		errs = append(errs, errors.New("a consul token and a token file both given: give one"))
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New("a consul client certificate needs both its certificate and its key file"))
	}
	for _, f := range []struct{ name, path string }{
		{"token file", c.TokenFile}, {"CA file", c.CAFile}, {"client certificate", c.CertFile}, {"client key", c.KeyFile},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			errs = append(errs, fmt.Errorf("consul %s: %w", f.name, err))
		}
	}
	return errors.Join(errs...)
}

// NewAPIClient builds the Consul API client c describes, and returns with
// it the agent's address as a URL, for messages (it never holds the token).
// TLS files (or a TLS server name) given for a plain-HTTP address are an
// error, never a silent fallback to plaintext.
func (c ConsulConfig) NewAPIClient() (*api.Client, *api.Config, string, error) {
	if err := c.validateFields(); err != nil {
		return nil, nil, "", err
	}
	cfg, where, err := c.apiConfig()
	if err != nil {
		return nil, nil, where, err
	}
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, nil, where, fmt.Errorf("consul client for %s: %w", where, err)
	}
	return client, cfg, where, nil
}

// apiConfig is the Consul API configuration c describes over the Consul
// CLI's environment, with the agent's address as a URL; an error for TLS
// settings given for a plain-HTTP address.
func (c ConsulConfig) apiConfig() (*api.Config, string, error) {
	cfg := api.DefaultConfig()
	if c.Address == "" && os.Getenv(api.HTTPAddrEnvName) == "" {
		// The api package's own fallback is localhost, which may resolve
		// to ::1 where the agent listens on 127.0.0.1 only.
		cfg.Address = DefaultConsulAddr
	}
	if c.Address != "" {
		cfg.Address = c.Address
		if !strings.Contains(c.Address, "://") && os.Getenv(api.HTTPSSLEnvName) == "" {
			cfg.Scheme = "http"
		}
	}
	if c.Token != "" || c.TokenFile != "" {
		cfg.Token, cfg.TokenFile = c.Token, c.TokenFile
	}
	// Flags over the environment (CONSUL_CACERT and so on), field by field.
	tc := &cfg.TLSConfig
	tc.CAFile = cmp.Or(c.CAFile, tc.CAFile)
	tc.CertFile = cmp.Or(c.CertFile, tc.CertFile)
	tc.KeyFile = cmp.Or(c.KeyFile, tc.KeyFile)
	tc.Address = cmp.Or(c.TLSServerName, tc.Address)
	scheme, addr := cfg.Scheme, cfg.Address
	if s, a, ok := strings.Cut(addr, "://"); ok {
		scheme, addr = s, a
	}
	where := scheme + "://" + addr
	if scheme == "https" {
		return cfg, where, nil
	}
	var given []string
	for _, s := range []struct{ name, value string }{
		{"a CA file", tc.CAFile}, {"a client certificate", tc.CertFile}, {"a TLS server name", tc.Address},
	} {
		if s.value != "" {
			given = append(given, s.name)
		}
	}
	if len(given) > 0 {
		return cfg, where, fmt.Errorf("consul TLS settings given (%s) but %s is plain HTTP: TLS needs an https:// address (or CONSUL_HTTP_SSL=true)", strings.Join(given, ", "), where)
	}
	return cfg, where, nil
}

// PermissionError is a 403 from Consul: the token lacks a permission. No
// retry can fix it.
type PermissionError struct {
	// Permission is what the token lacks, as Consul names it, such as
	// `'service:write' on "trimsvc"`; empty when Consul's answer did not
	// say.
	Permission string
	// Answer is Consul's answer (it names a token by its accessor ID, never
	// its secret).
	Answer string
}

func (e *PermissionError) Error() string {
	if e.Permission == "" {
		return "permission denied by consul ACLs: " + e.Answer
	}
	return "permission denied by consul ACLs: the token lacks " + e.Permission
}

var lacksRE = regexp.MustCompile(`lacks permission ('[^']+'(?: on "[^"]*")?)`)

// asPermission turns a 403 into a *PermissionError.
func asPermission(err error) error {
	var se api.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusForbidden {
		return err
	}
	pe := &PermissionError{Answer: se.Body}
	if m := lacksRE.FindStringSubmatch(se.Body); m != nil {
		pe.Permission = m[1]
	}
	return pe
}

// Permanent reports whether err is one that no retry can fix: a missing
// ACL permission, or TLS that does not verify (an unknown certificate
// authority, a wrong name, a certificate the agent refuses, an agent that
// does not speak TLS).
func Permanent(err error) bool {
	var (
		pe     *PermissionError
		verify *tls.CertificateVerificationError
		alert  tls.AlertError
		header tls.RecordHeaderError
	)
	return errors.As(err, &pe) || errors.As(err, &verify) || errors.As(err, &alert) || errors.As(err, &header) ||
		strings.Contains(fmt.Sprint(err), "server gave HTTP response to HTTPS client")
}

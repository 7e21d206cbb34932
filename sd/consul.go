package sd

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"

	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/internal/defaults"
	"github.com/trimkit/trimkit/internal/tlsfiles"
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
	// Token is the ACL token; TokenFile a file holding it. At most one of
	// them. The file (TokenFile, else CONSUL_HTTP_TOKEN_FILE) is read again
	// when it changes, looked at on every request, and, whatever it looks
	// like, before a 403 is taken for an answer: a rotation (the new token
	// written to the file, then the old one deleted) needs no restart. A
	// file that reads empty or cannot be read keeps the token read last.
	// (Over a unix:// address, Consul's api package reads it once.)
	Token     string
	TokenFile string
	// CAFile verifies the agent's certificate; CertFile and KeyFile are
	// the client certificate an agent with verify_incoming asks for;
	// TLSServerName is the name to verify the agent's certificate against.
	// The three files are read again when they change (looked at, at most
	// once a second, when a connection is made), as the gRPC side's are;
	// with CONSUL_CAPATH or CONSUL_HTTP_SSL_VERIFY=false, Consul's api
	// package reads them, once.
	CAFile, CertFile, KeyFile string
	TLSServerName             string
	// Datacenter is the datacenter whose catalog the queries read (Consul's
	// ?dc=): the agent's servers forward them over the WAN to that
	// datacenter's servers. Default: the agent's own.
	Datacenter string
}

// validateFields reports fields that contradict each other or name
// missing files.
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

// newAPIClient builds the Consul API client c describes, and returns with
// it the agent's address as a URL, for messages (it never holds the token).
// TLS files (or a TLS server name) given for a plain-HTTP address are an
// error, never a silent fallback to plaintext. The client reads its token
// file and TLS files again when they change (see ConsulConfig); the
// returned Config's Transport is the *http.Transport underneath, whose
// idle connections the caller closes when done.
func (c ConsulConfig) newAPIClient() (*api.Client, *api.Config, string, error) {
	if err := c.validateFields(); err != nil {
		return nil, nil, "", err
	}
	cfg, where, err := c.apiConfig()
	if err != nil {
		return nil, nil, where, err
	}
	if !strings.HasPrefix(cfg.Address, "unix://") { // api.NewClient makes its own client for a socket
		if err := c.rotating(cfg, strings.HasPrefix(where, "https://")); err != nil {
			return nil, nil, where, fmt.Errorf("consul client for %s: %w", where, err)
		}
	}
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, nil, where, fmt.Errorf("consul client for %s: %w", where, err)
	}
	return client, cfg, where, nil
}

// NewClient makes the Client for the agent c describes: the one way to a
// Client that Registrar, Instancer, LoadReporter and LoadWatcher all take.
// TLS files (or a TLS server name) given for a plain-HTTP address are an
// error, never a silent fallback to plaintext. It reads its token file and
// TLS files again when they change; its health queries decode only what an
// Entry holds (at 1,000 instances a tenth of the CPU of consul/api's
// decoding), and its errors name the agent's address. The connections it
// pools are its own: a program done with it closes them with its
// CloseIdleConnections method (an interface{ CloseIdleConnections() }).
func (c ConsulConfig) NewClient() (Client, error) {
	client, _, err := c.newClient()
	return client, err
}

// newClient is NewClient, with the API configuration (its Transport's idle
// connections are the caller's to close).
func (c ConsulConfig) newClient() (Client, *api.Config, error) {
	client, cfg, where, err := c.newAPIClient()
	if err != nil {
		return nil, nil, err
	}
	return newFastClient(client, cfg, where), cfg, nil
}

// apiConfig is the Consul API configuration c describes over the Consul
// CLI's environment, with the agent's address as a URL; an error for TLS
// settings given for a plain-HTTP address.
func (c ConsulConfig) apiConfig() (*api.Config, string, error) {
	cfg := api.DefaultConfig()
	if c.Address == "" && os.Getenv(api.HTTPAddrEnvName) == "" {
		// The api package's own fallback is localhost, which may resolve
		// to ::1 where the agent listens on 127.0.0.1 only.
		cfg.Address = defaults.ConsulAddr
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
	cfg.Datacenter = c.Datacenter
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

// rotating gives cfg an HTTP client that sends the token of the token
// file as it is at each request (see tokenTransport), and, over TLS, reads
// the CA and client certificate files again when they change
// (tlsfiles.ClientTLS: the agent's certificate verified against the CA of
// the moment, for its name, listing the server-auth usage).
func (c ConsulConfig) rotating(cfg *api.Config, https bool) error {
	transport := cfg.Transport // DefaultConfig's, pooled: one per client
	if https {
		tlsConf, err := agentTLS(cfg)
		if err != nil {
			return err
		}
		transport.TLSClientConfig = tlsConf
	}
	var rt http.RoundTripper = transport
	path := c.TokenFile
	if path == "" && c.Token == "" {
		path = os.Getenv(api.HTTPTokenFileEnvName) // over CONSUL_HTTP_TOKEN, as the api package ranks them
	}
	if path != "" {
		f, err := newTokenFile(path)
		if err != nil {
			return err
		}
		rt = &tokenTransport{next: transport, file: f}
		// api.NewClient reads the file once too (and so reads no other
		// from the environment); the transport sets the header on every
		// request, over what the client sets.
		cfg.Token, cfg.TokenFile = "", path
	}
	cfg.HttpClient = &http.Client{Transport: rt}
	return nil
}

// agentTLS is the TLS configuration for calling the agent cfg describes.
func agentTLS(cfg *api.Config) (*tls.Config, error) {
	tc := cfg.TLSConfig
	if tc.InsecureSkipVerify || tc.CAPath != "" || len(tc.CAPem) > 0 || len(tc.CertPEM) > 0 || len(tc.KeyPEM) > 0 {
		return api.SetupTLSConfig(&tc) // what api.NewClient does: files read once
	}
	certs, err := tlsfiles.LoadCerts(tc.CertFile, tc.KeyFile, tc.CAFile)
	if err != nil {
		return nil, err
	}
	return tlsfiles.ClientTLS(certs, agentName(tc.Address, cfg.Address)), nil
}

// agentName is the name the agent's certificate must hold: the TLS server
// name when given (its port dropped), else the host of the address.
func agentName(serverName, address string) string {
	name := serverName
	if name == "" {
		_, name, _ = strings.Cut(address, "://")
		if name == "" {
			name = address
		}
		name, _, _ = strings.Cut(name, "/") // a reverse proxy's path prefix
	}
	if host, _, err := net.SplitHostPort(name); err == nil {
		return host
	}
	return strings.TrimSuffix(strings.TrimPrefix(name, "["), "]")
}

// permissionError is a 403 from Consul: the token lacks a permission, or
// is not known (deleted, or not yet replicated). Only another token can
// fix it: see permanent.
type permissionError struct {
	// Permission is what the token lacks, as Consul names it, such as
	// `'service:write' on "trimsvc"`; empty when Consul's answer did not
	// say.
	Permission string
	// Answer is Consul's answer (it names a token by its accessor ID, never
	// its secret).
	Answer string
}

func (e *permissionError) Error() string {
	if e.Permission == "" {
		return "permission denied by consul ACLs: " + e.Answer
	}
	return "permission denied by consul ACLs: the token lacks " + e.Permission
}

var lacksRE = regexp.MustCompile(`lacks permission ('[^']+'(?: on "[^"]*")?)`)

// consulFailed reports whether err is consul/api's error for an answer of
// the agent's that failed (a 500) saying text: the body is the only word
// Consul gives of the cause.
func consulFailed(err error, text string) bool {
	var se api.StatusError
	return errors.As(err, &se) && se.Code == http.StatusInternalServerError && strings.Contains(se.Body, text)
}

// asPermission turns a 403 into a *permissionError.
func asPermission(err error) error {
	var se api.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusForbidden {
		return err
	}
	pe := &permissionError{Answer: se.Body}
	if m := lacksRE.FindStringSubmatch(se.Body); m != nil {
		pe.Permission = m[1]
	}
	return pe
}

// permanent reports whether err is one that retrying alone cannot fix, only
// a change of configuration: a missing ACL permission or an unknown token,
// or TLS that does not verify (an unknown certificate authority, a wrong
// name, a certificate the agent refuses or that expired, an agent that
// does not speak TLS). Register gives up on it at once, since at
// start-up it is a misconfiguration. A serving instance never does:
// Registrar.KeepRegistered and LoadReporter.Run go on trying, with the
// token and TLS files read again as they change (a rotation, a renewed
// certificate), and say loudly that they fail.
func permanent(err error) bool {
	var (
		pe     *permissionError
		verify *tls.CertificateVerificationError
		alert  tls.AlertError
		header tls.RecordHeaderError
	)
	return errors.As(err, &pe) || errors.As(err, &verify) || errors.As(err, &alert) || errors.As(err, &header) ||
		errors.Is(err, http.ErrSchemeMismatch) // an agent that does not speak TLS
}

package grpcserver

import (
	"errors"

	"google.golang.org/grpc"

	"github.com/trimkit/trimkit/internal/tlsfiles"
)

// TLS says, by file names (PEM), how a server serves TLS. The zero value
// serves plaintext.
//
// The files are read again when they change on disk (checked at a
// handshake, at most once a second) and when the reload function of
// ServerOptions is called (on SIGHUP, say), so that rotating them needs no
// restart; a rotation that does not load keeps the files loaded last.
type TLS struct {
	// CertFile and KeyFile are the server's certificate (it must name the
	// address callers dial, the one registered in Consul) and its key.
	CertFile, KeyFile string
	// ClientCAFile, when set, requires client certificates signed by this
	// CA (mutual TLS): a caller without one gets no connection, and every
	// call checks again that its chain is still valid and its CA still in
	// the file.
	ClientCAFile string
	// HealthCheckCAFile, with ClientCAFile, lets in client certificates
	// signed by a second CA for grpc.health.v1 calls only: the Consul
	// agents' CA, whose certificate an agent presents to a TLS health check
	// (enable_agent_tls_for_checks), while ClientCAFile stays your callers'
	// own.
	HealthCheckCAFile string
}

// ServerOptions reads the files and returns the grpc.ServerOptions that
// serve TLS with them (none for the zero TLS), and reload, which reads them
// again now and says why it could not. Give the options to grpc.NewServer
// after Limits.ServerOptions.
func (t TLS) ServerOptions() (opts []grpc.ServerOption, reload func() error, err error) {
	if err := t.validate(); err != nil {
		return nil, nil, err
	}
	if t.CertFile == "" {
		return nil, func() error { return nil }, nil
	}
	certs, err := tlsfiles.LoadCerts(t.CertFile, t.KeyFile, t.ClientCAFile)
	if err != nil {
		return nil, nil, err
	}
	reload = certs.Reload
	var trust []tlsfiles.TrustOption
	if t.HealthCheckCAFile != "" {
		check, err := tlsfiles.LoadCerts("", "", t.HealthCheckCAFile)
		if err != nil {
			return nil, nil, err
		}
		trust = append(trust, tlsfiles.HealthCheckCA(check))
		reload = func() error { return errors.Join(certs.Reload(), check.Reload()) }
	}
	return tlsfiles.ServerCreds(certs, trust...), reload, nil
}

// validate returns every file set without the one it needs, joined.
func (t TLS) validate() error {
	var errs []error
	if (t.CertFile == "") != (t.KeyFile == "") {
		errs = append(errs, errors.New("TLS: CertFile and KeyFile go together"))
	}
	if t.ClientCAFile != "" && t.CertFile == "" {
		errs = append(errs, errors.New("TLS: ClientCAFile needs CertFile: mutual TLS is TLS first"))
	}
	if t.HealthCheckCAFile != "" && t.ClientCAFile == "" {
		errs = append(errs, errors.New("TLS: HealthCheckCAFile needs ClientCAFile: without client certificates required, every caller may check health"))
	}
	return errors.Join(errs...)
}

package localconsul

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// CA is a certificate authority made with the real tool, `consul tls ca
// create`, and the certificates it signs with `consul tls cert create`.
type CA struct {
	// CertFile is the CA's certificate, for whoever verifies.
	CertFile string
	bin, dir string
	key      string
}

// NewCA makes a CA in dir, a directory of its own.
func NewCA(bin, dir string) (*CA, error) {
	dir, err := filepath.Abs(dir) // its commands run in it
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ca := &CA{bin: bin, dir: dir}
	files, err := ca.run("ca", "create")
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		if strings.HasSuffix(f, "-key.pem") {
			ca.key = f
		} else {
			ca.CertFile = f
		}
	}
	if ca.CertFile == "" || ca.key == "" {
		return nil, fmt.Errorf("consul tls ca create made %v", files)
	}
	return ca, nil
}

// Cert signs a certificate of kind "server" (a Consul server's: also valid
// for server.dc1.consul), "client" (a Consul client agent's, which trimsvc
// uses too: good for serving and for calling) or "cli" (for calling only).
// All hold localhost and 127.0.0.1.
func (ca *CA) Cert(kind string) (certFile, keyFile string, err error) {
	return ca.CertFor(kind, "")
}

// CertFor is Cert for an agent of datacenter dc ("": dc1), as `consul tls
// cert create -dc` makes it: a server's certificate is valid for
// server.<dc>.consul, the name that the agents of every datacenter verify
// (verify_server_hostname) when they call a server of dc, over the WAN
// too.
func (ca *CA) CertFor(kind, dc string) (certFile, keyFile string, err error) {
	args := []string{"cert", "create", "-" + kind, "-ca", ca.CertFile, "-key", ca.key}
	if dc != "" {
		args = append(args, "-dc", dc)
	}
	files, err := ca.run(args...)
	if err != nil {
		return "", "", err
	}
	for _, f := range files {
		if strings.HasSuffix(f, "-key.pem") {
			keyFile = f
		} else {
			certFile = f
		}
	}
	if certFile == "" || keyFile == "" {
		return "", "", fmt.Errorf("consul tls cert create -%s made %v", kind, files)
	}
	return certFile, keyFile, nil
}

// run runs `consul tls ARGS` in the CA's directory and returns the files it
// made.
func (ca *CA) run(args ...string) ([]string, error) {
	before, err := os.ReadDir(ca.dir)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(ca.bin, append([]string{"tls"}, args...)...)
	cmd.Dir = ca.dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("consul tls %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	after, err := os.ReadDir(ca.dir)
	if err != nil {
		return nil, err
	}
	var made []string
	for _, e := range after {
		if !slices.ContainsFunc(before, func(b os.DirEntry) bool { return b.Name() == e.Name() }) {
			made = append(made, filepath.Join(ca.dir, e.Name()))
		}
	}
	return made, nil
}

package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/peterbourgon/ff/v3"

	"github.com/trimkit/trimkit/sd"
)

// ErrUsage marks an error in the command line or the environment; commands
// exit with status 2 for it.
var ErrUsage = errors.New("usage")

// Parse parses args into fs, then reads every flag not given on the command
// line from the environment variable EnvName(prefix, flag). A --help or -h
// prints Usage to out and returns flag.ErrHelp.
func Parse(fs *flag.FlagSet, args []string, prefix, synopsis string, out io.Writer) error {
	fs.SetOutput(out)
	fs.Usage = func() { Usage(out, fs, prefix, synopsis) }
	if err := ff.Parse(fs, args, ff.WithEnvVarPrefix(prefix)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	return nil
}

// EnvName is the environment variable ff reads for a flag: the prefix, an
// underscore, and the flag's name in upper case with - as _.
func EnvName(prefix, name string) string {
	return prefix + "_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Usage writes the synopsis and every flag with its environment variable,
// default and description.
func Usage(out io.Writer, fs *flag.FlagSet, prefix, synopsis string) {
	fmt.Fprintf(out, "%s\n\nFlags (each also read from its environment variable):\n", strings.TrimSpace(synopsis))
	fs.VisitAll(func(f *flag.Flag) {
		def := f.DefValue
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(out, "  -%s  (env %s, default %s)\n", f.Name, EnvName(prefix, f.Name), def)
		fmt.Fprintf(out, "      %s\n", f.Usage)
	})
}

// SplitList splits a comma-separated flag value, dropping blanks around and
// between items.
func SplitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// EnvOr returns the environment variable key, or def when it is empty; for
// defaults taken from another tool's variable, such as CONSUL_HTTP_ADDR.
func EnvOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// Exit ends a command's main with the exit status err calls for: 0 for nil
// or --help, 2 for a usage error, 1 for anything else, printing err to
// stderr as "name: err".
func Exit(name string, err error) {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return
	case errors.Is(err, ErrUsage):
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

// ConsulFlags defines the -consul-* flags both commands share, into c. An
// empty flag leaves the Consul CLI's environment variable in charge, and
// the help says which; a token is never shown as a default.
func ConsulFlags(fs *flag.FlagSet, c *sd.ConsulConfig) {
	fs.StringVar(&c.Address, "consul-addr", EnvOr("CONSUL_HTTP_ADDR", "127.0.0.1:8500"), "Consul agent HTTP address; https://host:port for TLS (default from CONSUL_HTTP_ADDR)")
	fs.StringVar(&c.Token, "consul-token", "", "Consul ACL token (empty: CONSUL_HTTP_TOKEN); prefer -consul-token-file, which keeps it out of the process list")
	fs.StringVar(&c.TokenFile, "consul-token-file", "", "file holding the Consul ACL token (empty: CONSUL_HTTP_TOKEN_FILE)")
	fs.StringVar(&c.CAFile, "consul-ca-file", "", "CA certificate to verify the Consul agent's HTTPS certificate (empty: CONSUL_CACERT)")
	fs.StringVar(&c.CertFile, "consul-client-cert", "", "client certificate for an agent with verify_incoming (empty: CONSUL_CLIENT_CERT)")
	fs.StringVar(&c.KeyFile, "consul-client-key", "", "key of -consul-client-cert (empty: CONSUL_CLIENT_KEY)")
	fs.StringVar(&c.TLSServerName, "consul-tls-server-name", "", "name to verify the agent's certificate against (empty: CONSUL_TLS_SERVER_NAME, else the address's host)")
}

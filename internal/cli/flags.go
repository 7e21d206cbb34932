package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3"

	"github.com/trimkit/trimkit/internal/defaults"
	"github.com/trimkit/trimkit/sd"
)

// ErrUsage marks an error in the command line or the environment; commands
// exit with status 2 for it.
var ErrUsage = errors.New("usage")

// Parse parses args into fs, then reads every flag not given on the command
// line from the environment variable EnvName(prefix, flag). A --help or -h
// prints Usage to out and returns flag.ErrHelp. Any other error is an
// ErrUsage that says what was wrong in one line, and nothing is printed for
// it: the flag package's own report (the error, then the whole usage) is
// silenced, and Exit prints the error once with a pointer to --help.
func Parse(fs *flag.FlagSet, args []string, prefix, synopsis string, out io.Writer) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := ff.Parse(fs, args, ff.WithEnvVarPrefix(prefix))
	fs.SetOutput(out)
	fs.Usage = func() { Usage(out, fs, prefix, synopsis) }
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		fs.Usage()
		return err
	}
	if envErr := fromEnv(fs, prefix, err); envErr != nil {
		return fmt.Errorf("%w: %w", ErrUsage, envErr)
	}
	// ff puts "error parsing commandline arguments: " before the flag
	// package's error, which already says what is wrong, such as
	// `invalid value "abc" for flag -retry-max: parse error`.
	if inner := errors.Unwrap(err); inner != nil {
		err = inner
	}
	return fmt.Errorf("%w: %w", ErrUsage, withHint(fs, err))
}

// fromEnv restates ff's error for an environment variable that does not
// parse, which names the variable but not its value, as
// `environment TRIMSVC_CHECK_INTERVAL="5": invalid duration for
// -check-interval (...)`; nil when err is not about the environment.
func fromEnv(fs *flag.FlagSet, prefix string, err error) error {
	var bad *flag.Flag
	fs.VisitAll(func(f *flag.Flag) {
		if bad == nil && fromEnvVar(err, EnvName(prefix, f.Name)) {
			bad = f
		}
	})
	if bad == nil {
		return nil
	}
	key := EnvName(prefix, bad.Name)
	kind, hint := kindOf(bad)
	msg := fmt.Sprintf("environment %s=%q: invalid %s for -%s", key, os.Getenv(key), kind, bad.Name)
	// The flag's own error, unless it is the flag package's "parse error",
	// which says nothing more.
	inner := err
	for errors.Unwrap(inner) != nil {
		inner = errors.Unwrap(inner)
	}
	if s := inner.Error(); s != "parse error" {
		msg += ": " + s
	}
	if hint != "" {
		msg += " (" + hint + ")"
	}
	return errors.New(msg)
}

// withHint adds to the flag package's `invalid value "5" for flag
// -check-interval: parse error` what a value of the flag looks like, for
// durations and booleans.
func withHint(fs *flag.FlagSet, err error) error {
	var hint string
	fs.VisitAll(func(f *flag.Flag) {
		if hint == "" && badFlagValue(err, f.Name) {
			_, hint = kindOf(f)
		}
	})
	if hint == "" {
		return err
	}
	return fmt.Errorf("%w (%s)", err, hint)
}

// kindOf says what a flag's value must be, for errors: a kind, and for some
// an example.
func kindOf(f *flag.Flag) (kind, hint string) {
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return "value", ""
	}
	switch g.Get().(type) {
	case time.Duration:
		return "duration", "a number with a unit, such as 5s or 1m30s"
	case bool:
		return "boolean", "true or false"
	case int, int64, uint, uint64:
		return "integer", ""
	case float64:
		return "number", ""
	}
	return "value", ""
}

// EnvName is the environment variable ff reads for a flag: the prefix, an
// underscore, and the flag's name in upper case with - as _.
func EnvName(prefix, name string) string {
	return prefix + "_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Usage writes the synopsis, what `go run` does to the exit statuses it
// lists (GoRunNote), and every flag with its environment variable, default
// and description.
func Usage(out io.Writer, fs *flag.FlagSet, prefix, synopsis string) {
	fmt.Fprintf(out, "%s\n\n%s\n\nFlags (each also read from its environment variable):\n", strings.TrimSpace(synopsis), GoRunNote(fs.Name()))
	fs.VisitAll(func(f *flag.Flag) {
		def := f.DefValue
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(out, "  -%s  (env %s, default %s)\n", f.Name, EnvName(prefix, f.Name), def)
		fmt.Fprintf(out, "      %s\n", f.Usage)
	})
}

// GoRunNote says, for the help of the command name, that `go run` hides
// its exit statuses: go run prints the command's own ("exit status 2")
// and exits 1 itself for any failure, so only a built binary, bin/name
// after `make build`, exits 2 for a usage error.
func GoRunNote(name string) string {
	return "Under `go run` every failure exits 1 (go run prints the command's own\n" +
		"status, such as \"exit status 2\", and exits 1 itself): build with\n" +
		"`make build` and run bin/" + name + " for these exit statuses."
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
// or --help (Parse printed the help), 2 for a usage error, 1 for anything
// else. It prints err to stderr as "name: err", a usage error followed by a
// line pointing to --help.
func Exit(name string, err error) {
	if code := report(os.Stderr, name, err); code != 0 {
		os.Exit(code)
	}
}

// report prints err for the command name to w, as Exit does, and returns
// the exit status.
func report(w io.Writer, name string, err error) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, ErrUsage):
		// Usage errors are "usage: <what>": the pointer to --help says so.
		msg := strings.TrimPrefix(err.Error(), ErrUsage.Error()+": ")
		fmt.Fprintf(w, "%s: %s\nRun '%s --help' for usage.\n", name, msg, name)
		return 2
	default:
		fmt.Fprintf(w, "%s: %v\n", name, err)
		return 1
	}
}

// ConsulFlags defines the -consul-* flags both commands share, into c. An
// empty flag leaves the Consul CLI's environment variable in charge, and
// the help says which; a token is never shown as a default.
func ConsulFlags(fs *flag.FlagSet, c *sd.ConsulConfig) {
	// -consul-addr shows one default, "", whose meaning the help spells
	// out; c.Address holds the address it stands for, so that messages
	// name the agent actually asked.
	c.Address = ""
	fs.Var(consulAddr{&c.Address}, "consul-addr", "Consul agent HTTP address, host:port, or https://host:port for TLS (empty: CONSUL_HTTP_ADDR, else "+defaults.ConsulAddr+")")
	c.Address = consulAddrOr("")
	fs.StringVar(&c.Token, "consul-token", "", "Consul ACL token (empty: CONSUL_HTTP_TOKEN); prefer -consul-token-file, which keeps it out of the process list")
	fs.StringVar(&c.TokenFile, "consul-token-file", "", "file holding the Consul ACL token (empty: CONSUL_HTTP_TOKEN_FILE)")
	fs.StringVar(&c.CAFile, "consul-ca-file", "", "CA certificate to verify the Consul agent's HTTPS certificate (empty: CONSUL_CACERT); needs an https:// -consul-addr")
	fs.StringVar(&c.CertFile, "consul-client-cert", "", "client certificate for an agent with verify_incoming (empty: CONSUL_CLIENT_CERT); needs an https:// -consul-addr")
	fs.StringVar(&c.KeyFile, "consul-client-key", "", "key of -consul-client-cert (empty: CONSUL_CLIENT_KEY)")
	fs.StringVar(&c.TLSServerName, "consul-tls-server-name", "", "name to verify the agent's certificate against (empty: CONSUL_TLS_SERVER_NAME, else the address's host); needs an https:// -consul-addr")
}

// consulAddrOr is addr, or when it is empty CONSUL_HTTP_ADDR, else
// defaults.ConsulAddr.
func consulAddrOr(addr string) string {
	if addr != "" {
		return addr
	}
	return EnvOr("CONSUL_HTTP_ADDR", defaults.ConsulAddr)
}

// consulAddr is the value of -consul-addr: an empty one, given or not,
// stands for CONSUL_HTTP_ADDR, else defaults.ConsulAddr.
type consulAddr struct{ p *string }

func (a consulAddr) String() string {
	if a.p == nil {
		return ""
	}
	return *a.p
}

func (a consulAddr) Set(s string) error {
	*a.p = consulAddrOr(s)
	return nil
}

func (a consulAddr) Get() any { return a.String() }

// fromEnvVar reports whether err is ff's word for a value of the
// environment variable key that did not parse: its error names the
// variable as `from environment variable "KEY"` and has no type of its
// own. TestBadEnvironmentNamesVariableAndValue pins it to ff's own error.
func fromEnvVar(err error, key string) bool {
	return strings.Contains(err.Error(), fmt.Sprintf("from environment variable %q", key))
}

// badFlagValue reports whether err is the flag package's word for a value
// of flag -name that did not parse: `invalid value "V" for flag -name: `
// and the cause, with no type of its own. TestBadFlagIsOneErrorAndAPointer
// pins it to the flag package's own error.
func badFlagValue(err error, name string) bool {
	return strings.HasPrefix(err.Error(), "invalid value ") && strings.Contains(err.Error(), " for flag -"+name+": ")
}

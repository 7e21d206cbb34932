package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/trimkit/trimkit/internal/cli"
	"github.com/trimkit/trimkit/internal/consulname"
	"github.com/trimkit/trimkit/internal/netaddr"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport/grpcserver"
	"github.com/trimkit/trimkit/trimsvc"
)

const envPrefix = "TRIMSVC"

const synopsis = `
usage: trimsvc [flags]

trimsvc serves the gRPC Trim service (pb.Trim/TrimSpace), with grpc.health.v1
and server reflection. Once it listens and is SERVING it registers itself in
Consul with a native gRPC health check, checks every -resync-interval that the
agent still holds it, and on SIGTERM or SIGINT goes NOT_SERVING, deregisters,
waits -drain and stops gracefully. OpenTelemetry traces of its calls
(otelgrpc's server spans, continuing the callers' traces) are on with
OTEL_TRACES_EXPORTER=otlp or an OTEL_EXPORTER_OTLP_ENDPOINT, named by
OTEL_SERVICE_NAME (default trimsvc). Exit status: 0 after a clean shutdown,
1 on a failure (a failed deregistration included), 2 for bad flags.`

type config struct {
	grpcAddr           string
	httpAddr           string
	advertiseAddr      string
	consul             sd.ConsulConfig
	tlsCertFile        string
	tlsKeyFile         string
	tlsClientCAFile    string
	tlsCheckCAFile     string
	checkTLSSkipVerify bool
	serviceName        string
	serviceID          string
	tags               []string
	region, zone       string
	checkInterval      time.Duration
	deregisterAfter    time.Duration
	resyncInterval     time.Duration
	registerTimeout    time.Duration
	drain              time.Duration
	maxInputBytes      int
	addrFile           string
	register           bool
	printDefinition    bool
	loadReportInterval time.Duration
	concurrencyLimit   string
	maxConns           int
	maxPendingConns    int
	firstByteTimeout   time.Duration
	handshakeTimeout   time.Duration
}

func parseConfig(args []string, stdout io.Writer) (config, error) {
	fs := flag.NewFlagSet("trimsvc", flag.ContinueOnError)
	var (
		c    config
		tags string
	)
	fs.StringVar(&c.grpcAddr, "grpc-addr", ":8975", "gRPC listen address; port 0 picks a free port, and the bound port is registered")
	fs.StringVar(&c.httpAddr, "http-addr", "127.0.0.1:8976", "HTTP debug address serving /metrics and /healthz; off disables it")
	fs.StringVar(&c.advertiseAddr, "advertise-addr", "", "host[:port] registered in Consul (default: the listen host when specific, else the first non-loopback interface address, else 127.0.0.1; the bound port)")
	cli.ConsulFlags(fs, &c.consul)
	fs.StringVar(&c.tlsCertFile, "tls-cert-file", "", "serve gRPC over TLS with this certificate (PEM); it must hold the advertised address. Re-read when it changes on disk or on SIGHUP")
	fs.StringVar(&c.tlsKeyFile, "tls-key-file", "", "the key of -tls-cert-file (PEM)")
	fs.StringVar(&c.tlsClientCAFile, "tls-client-ca-file", "", "require client certificates signed by this CA (mutual TLS); Consul's check then presents the agent's certificate (enable_agent_tls_for_checks)")
	fs.StringVar(&c.tlsCheckCAFile, "tls-check-ca-file", "", "also let in client certificates signed by this CA, the Consul agents', for grpc.health.v1 calls only: Consul's gRPC check over TLS presents the agent's certificate (enable_agent_tls_for_checks), while -tls-client-ca-file is your callers' own CA")
	fs.BoolVar(&c.checkTLSSkipVerify, "check-tls-skip-verify", false, "Consul's gRPC check does not verify this instance's certificate: needed when -tls-cert-file is signed by a CA the agents do not trust (your service's own); the check still needs the instance to answer over TLS")
	fs.StringVar(&c.serviceName, "service-name", "trimsvc", "service name to register: a DNS label (letters, digits and inner hyphens, at most 63 characters)")
	fs.StringVar(&c.serviceID, "service-id", "", "service ID to register (default <name>-<host>-<port> of the advertised address)")
	fs.StringVar(&tags, "tags", "", "comma-separated tags to register")
	fs.StringVar(&c.region, "locality-region", "", "the region to register this instance in (its Consul locality, Consul 1.17+): callers given the same -locality-region prefer it")
	fs.StringVar(&c.zone, "locality-zone", "", "the zone to register this instance in (its Consul locality): callers given the same -locality-zone prefer it, then their region's other zones")
	fs.DurationVar(&c.checkInterval, "check-interval", 5*time.Second, "interval of Consul's gRPC health check")
	fs.DurationVar(&c.deregisterAfter, "deregister-after", time.Minute, "Consul removes the instance after its check has been critical this long")
	fs.DurationVar(&c.resyncInterval, "resync-interval", 10*time.Second, "how often to make sure the local agent still holds the registration")
	fs.DurationVar(&c.registerTimeout, "register-timeout", 30*time.Second, "how long to retry the first registration before giving up")
	fs.DurationVar(&c.drain, "drain", 2*time.Second, "wait after deregistering, so callers stop picking this instance, before stopping")
	fs.IntVar(&c.maxInputBytes, "max-input-bytes", trimsvc.DefaultMaxInputBytes, "largest input accepted, in bytes; larger gets InvalidArgument")
	fs.DurationVar(&c.loadReportInterval, "load-report-interval", 0, `publish this instance's load to Consul KV (trimkit/load/<service-name>/<service-id>: {"load", "inflight", "rps", "ts", "addr", "interval_ms"}) this often, under a session that deletes it when the instance dies; 0: off (5s is a sound value: 200 KV writes a second per 1,000 instances)`)
	fs.StringVar(&c.concurrencyLimit, "concurrency-limit", "adaptive", "how many calls run at once; calls past it get ResourceExhausted at once, marked so that callers try another instance, and every answer to a caller that asks (request header endpoint-load-metrics-format: BIN, as trimkit's p2c and least-loaded balancers send) carries this instance's load (ORCA, trailer endpoint-load-metrics-bin). adaptive: a limit that follows the service's latency (grpcserver.AdaptiveLimit); off: none, calls queue up to 128 in flight; N: a fixed limit. Health checks are never limited")
	d := grpcserver.DefaultLimits
	fs.IntVar(&c.maxConns, "max-connections", d.MaxConnections, "most connections open at once; when all are taken, a new one takes the place of a connection not yet established (TLS handshake or HTTP/2 preface not done) that waits for its caller, or is closed at once if every one is established: an established connection is never closed for a newcomer")
	fs.IntVar(&c.maxPendingConns, "max-pending-connections", 0, "most connections not yet established at once (default half of -max-connections): a caller without a certificate can hold no more, however many sockets it opens")
	fs.DurationVar(&c.firstByteTimeout, "first-byte-timeout", d.FirstByteTimeout, "close a connection that has sent nothing (no TLS ClientHello, no HTTP/2 preface) this long after it was accepted")
	fs.DurationVar(&c.handshakeTimeout, "handshake-timeout", d.HandshakeTimeout, "close a connection not established (TLS handshake and HTTP/2 preface done) this long after it was accepted")
	fs.BoolVar(&c.register, "register", true, "register in Consul, keep registered and deregister on shutdown; false: the agent's configuration owns the registration (see -print-service-definition), and on SIGTERM the instance only goes NOT_SERVING, drains and stops, so that the agent's check takes it out")
	fs.BoolVar(&c.printDefinition, "print-service-definition", false, "print the JSON service definition this instance would register (for an agent's -config-dir or `consul services register FILE`) and exit; needs a fixed port in -grpc-addr or -advertise-addr")
	fs.StringVar(&c.addrFile, "addr-file", "", `once the listeners are bound, write where they are to this file as JSON ({"service_id", "grpc_addr", "advertised_addr", "http_addr"}), atomically; removed on exit (for scripts and tests)`)
	if err := cli.Parse(fs, args, envPrefix, synopsis, stdout); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("%w: unexpected arguments %q", cli.ErrUsage, fs.Args())
	}
	c.tags = cli.SplitList(tags)
	if err := c.validate(); err != nil {
		return config{}, fmt.Errorf("%w: %w", cli.ErrUsage, err)
	}
	return c, nil
}

func (c config) validate() error {
	var errs []error
	positive := func(name string, d time.Duration) {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("-%s must be positive, got %v", name, d))
		}
	}
	positive("check-interval", c.checkInterval)
	positive("deregister-after", c.deregisterAfter)
	positive("resync-interval", c.resyncInterval)
	positive("register-timeout", c.registerTimeout)
	if c.loadReportInterval < 0 {
		errs = append(errs, fmt.Errorf("-load-report-interval must not be negative, got %v", c.loadReportInterval))
	}
	if c.drain < 0 {
		errs = append(errs, fmt.Errorf("-drain must not be negative, got %v", c.drain))
	}
	if _, err := c.concurrency(); err != nil {
		errs = append(errs, err)
	}
	if c.maxConns <= 0 {
		errs = append(errs, fmt.Errorf("-max-connections must be positive, got %d", c.maxConns))
	}
	if c.maxPendingConns < 0 || c.maxPendingConns > c.maxConns {
		errs = append(errs, fmt.Errorf("-max-pending-connections must be between 0 (half of -max-connections) and -max-connections (%d), got %d", c.maxConns, c.maxPendingConns))
	}
	positive("first-byte-timeout", c.firstByteTimeout)
	positive("handshake-timeout", c.handshakeTimeout)
	if c.maxInputBytes <= 0 {
		errs = append(errs, fmt.Errorf("-max-input-bytes must be positive, got %d", c.maxInputBytes))
	}
	if err := consulname.ValidServiceName(c.serviceName); err != nil {
		errs = append(errs, fmt.Errorf("-service-name: %w", err))
	}
	if c.serviceID != "" {
		if err := consulname.ValidServiceID(c.serviceID); err != nil {
			errs = append(errs, fmt.Errorf("-service-id: %w", err))
		}
	}
	for _, tag := range c.tags {
		if err := consulname.ValidTag(tag); err != nil {
			errs = append(errs, fmt.Errorf("-tags: %w", err))
		}
	}
	if c.advertiseAddr != "" {
		host := c.advertiseAddr
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		// The host goes into the default service ID.
		if err := consulname.ValidServiceID(host); err != nil {
			errs = append(errs, fmt.Errorf("-advertise-addr %q: not a host name or address", c.advertiseAddr))
		}
	}
	// An empty -consul-addr stands for CONSUL_HTTP_ADDR, else 127.0.0.1:8500
	// (cli.ConsulFlags); NewClient also refuses TLS settings for a plain
	// http:// address, a usage error rather than a failure to start. The
	// client it makes has no connection yet.
	if consul, err := c.consul.NewClient(); err != nil {
		errs = append(errs, err)
	} else if ci, ok := consul.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
	if (c.tlsCertFile == "") != (c.tlsKeyFile == "") {
		errs = append(errs, errors.New("-tls-cert-file and -tls-key-file go together"))
	}
	if c.tlsClientCAFile != "" && c.tlsCertFile == "" {
		errs = append(errs, errors.New("-tls-client-ca-file needs -tls-cert-file: mutual TLS is TLS first"))
	}
	if c.tlsCheckCAFile != "" && c.tlsClientCAFile == "" {
		errs = append(errs, errors.New("-tls-check-ca-file needs -tls-client-ca-file: without client certificates required, every caller may check health"))
	}
	if c.checkTLSSkipVerify && c.tlsCertFile == "" {
		errs = append(errs, errors.New("-check-tls-skip-verify needs -tls-cert-file: without TLS there is no certificate to verify"))
	}
	if _, _, err := net.SplitHostPort(c.grpcAddr); err != nil {
		errs = append(errs, fmt.Errorf("-grpc-addr %q: %w", c.grpcAddr, err))
	}
	if c.httpAddr != "off" {
		if _, _, err := net.SplitHostPort(c.httpAddr); err != nil {
			errs = append(errs, fmt.Errorf("-http-addr %q: %w", c.httpAddr, err))
		}
	}
	return errors.Join(errs...)
}

// advertised returns the host and port to register for a gRPC listener on
// -grpc-addr bound to bound's port: see netaddr.Advertise.
func (c config) advertised(bound *net.TCPAddr) (string, int, error) {
	listenHost, _, _ := net.SplitHostPort(c.grpcAddr)
	host, port, err := netaddr.Advertise(net.JoinHostPort(listenHost, strconv.Itoa(bound.Port)), c.advertiseAddr)
	if err != nil {
		return "", 0, fmt.Errorf("-advertise-addr: %w", err)
	}
	return host, port, nil
}

// serviceIDFor is -service-id, or the default ID: <name>-<host>-<port>.
func (c config) serviceIDFor(host string, port int) string {
	if c.serviceID != "" {
		return c.serviceID
	}
	return consulname.DefaultServiceID(c.serviceName, host, port)
}

// registration is what the instance registers for host and port.
func (c config) registration(host string, port int) sd.Registration {
	return sd.Registration{
		ID:                 c.serviceIDFor(host, port),
		Name:               c.serviceName,
		Tags:               c.tags,
		Region:             c.region,
		Zone:               c.zone,
		Address:            host,
		Port:               port,
		CheckInterval:      c.checkInterval,
		CheckTLS:           c.tlsCertFile != "",
		CheckTLSSkipVerify: c.checkTLSSkipVerify,
		DeregisterAfter:    c.deregisterAfter,
	}
}

// definition is the JSON service definition of an instance on -grpc-addr,
// which must name its port: nothing is bound to find one.
func (c config) definition() ([]byte, error) {
	_, p, _ := net.SplitHostPort(c.grpcAddr)
	port, _ := strconv.Atoi(p)
	host, port, err := c.advertised(&net.TCPAddr{Port: port})
	if err != nil {
		return nil, err
	}
	if port == 0 {
		return nil, fmt.Errorf("%w: -print-service-definition needs a fixed port: -grpc-addr %s binds a free one only when it runs", cli.ErrUsage, c.grpcAddr)
	}
	return c.registration(host, port).Definition()
}

// concurrency is the ConcurrencyLimit -concurrency-limit names.
func (c config) concurrency() (grpcserver.ConcurrencyLimit, error) {
	switch c.concurrencyLimit {
	case "adaptive":
		return nil, nil // Limits' default: an AdaptiveLimit up to MaxCallsInFlight
	case "off":
		return grpcserver.NoConcurrencyLimit(), nil
	}
	n, err := strconv.Atoi(c.concurrencyLimit)
	if err != nil || n <= 0 {
		return nil, fmt.Errorf("-concurrency-limit %q: want adaptive, off or a positive number of calls", c.concurrencyLimit)
	}
	return grpcserver.FixedLimit(n), nil
}

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/cli"
	"github.com/trimkit/trimkit/internal/defaults"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport/trim"
)

const envPrefix = "TRIMCLIENT"

const synopsis = `
usage: client [flags] TEXT

client finds the passing instances of a service in Consul and calls
pb.Trim/TrimSpace on them through trimkit's client stack: the -balancer,
ejection of instances that keep failing, retries within a budget (a call an
instance sheds for overload goes to another), hedging with -hedge-after,
connections to every instance or to a deterministic -subset, and
-throttle. With -n 1 (the default) it prints TEXT trimmed. With -n above 1,
or -duration, it is a load generator: -c callers back to back, or with
-rate an open loop at a fixed rate (latency counted from when each call was
due, so a stalled instance cannot hide), and it prints a summary:
requests, failures, attempts, req/s, p50/p90/p99/p99.9/max latency, the
requests each instance answered, and the seconds that had failures with
the first and last failure's time (-json: one JSON object, with calls and
failures for every second). SIGINT or SIGTERM ends a load run: no new
requests, those in flight finish, then the summary; a second signal
cancels them. OpenTelemetry traces of each call and attempt are on with
OTEL_TRACES_EXPORTER=otlp or an OTEL_EXPORTER_OTLP_ENDPOINT, named by
OTEL_SERVICE_NAME (default client). Exit status: 0 when every request
succeeded, 1 when any failed, 2 for bad flags.`

type config struct {
	client   client.Config
	n, c     int
	rate     float64
	duration time.Duration
	json     bool
	text     string
	httpAddr string
	// failStatic is the Endpointer's fail-static rule.
	failStatic client.FailStatic
}

// load reports whether the command is a load generator.
func (c config) load() bool { return c.n > 1 || c.duration > 0 }

// flagOf names the flag that sets each client.Config field, so that the
// client's own validation speaks in flags here.
var flagOf = map[string]string{
	"Discovery":         "-discovery",
	"DNSAddr":           "-dns-addr",
	"Query":             "-query",
	"Service":           "-service-name",
	"Tags":              "-tags",
	"Read":              "-read",
	"TLS.CAFile":        "-tls-ca-file",
	"TLS.CertFile":      "-tls-cert-file",
	"Balancer":          "-balancer",
	"Retry.MaxAttempts": "-retry-max",
	"Retry.Timeout":     "-retry-timeout",
	"Retry.HedgeAfter":  "-hedge-after",
	"Subset":            "-subset",
	"SubsetCaller":      "-subset-caller",
	"Datacenters":       "-datacenters",
	"Overprovisioning":  "-overprovisioning",
	"Zone":              "-locality-zone",
	"Near":              "-near",
}

func parseConfig(args []string, stdout io.Writer) (config, error) {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	var (
		c    config
		tags string
		dcs  string
	)
	cli.ConsulFlags(fs, &c.client.Consul)
	fs.StringVar(&c.client.TLS.CAFile, "tls-ca-file", "", "call the instances over TLS, verifying their certificates against this CA (empty: plaintext)")
	fs.StringVar(&c.client.TLS.CertFile, "tls-cert-file", "", "client certificate for instances that require one (mutual TLS)")
	fs.StringVar(&c.client.TLS.KeyFile, "tls-key-file", "", "key of -tls-cert-file")
	fs.StringVar(&c.client.TLS.ServerName, "tls-server-name", "", "name the instances' certificates must hold (empty: the address dialled)")
	fs.StringVar(&c.client.Service, "service-name", trim.DefaultServiceName, "service to call")
	fs.StringVar(&tags, "tags", "", "comma-separated tags an instance must all carry (one, with -discovery dns)")
	fs.StringVar(&c.client.Discovery, "discovery", client.DiscoveryConsul, `how to find instances: "consul" (the HTTP API's blocking queries), "dns" (SRV records from Consul's DNS interface, polled every second) or "query" (a prepared query, -query, run every second: its failover is Consul's)`)
	fs.StringVar(&c.client.Query, "query", "", "the prepared query of -discovery query, its name or ID (empty: -service-name)")
	fs.StringVar(&c.client.DNSAddr, "dns-addr", defaults.DNSAddr, "Consul's DNS interface, for -discovery dns")
	fs.StringVar(&dcs, "datacenters", "", "comma-separated datacenters to call the service in, in order of preference (empty: the agent's own): the first takes every call while 1/-overprovisioning of its instances are healthy, the shortfall spills over to the next; see docs/multi-dc.md")
	fs.StringVar(&c.client.Region, "locality-region", "", "this caller's region: instances registered in it (trimsvc -locality-region) are preferred over the rest of each datacenter, with the same spill rule as between -datacenters")
	fs.StringVar(&c.client.Zone, "locality-zone", "", "this caller's zone: instances registered in it are preferred, then those of -locality-region, then the rest")
	fs.StringVar(&c.client.Near, "near", "", `prefer the instances on the nodes nearest this one by Consul's network coordinates: "_agent" (the agent's node) or a node's name; those within twice the nearest one's round trip, or 1ms more, come first in the agent's datacenter, with the same spill rule as between -datacenters (empty: every instance alike)`)
	fs.Float64Var(&c.client.Overprovisioning, "overprovisioning", 1.4, "with several -datacenters, how much spare capacity a datacenter is taken to have: it keeps every call while at least 1/this of its instances are healthy (Envoy's overprovisioning factor)")
	read := fs.String("read", sd.ReadStale, `how discovery reads the catalog: "stale" (any Consul server answers; reads go on while there is no leader), "leader" (the leader only) or "cache" (the local agent's cache, streaming-backed)`)
	fs.DurationVar(&c.client.Read.MaxStale, "max-stale", 0, "with -read stale, ask the leader again when an answer is further behind it than this (0: 2s)")
	fs.IntVar(&c.client.Retry.MaxAttempts, "retry-max", defaults.MaxAttempts, "most attempts per request, the first included (0: the default)")
	fs.DurationVar(&c.client.Retry.Timeout, "retry-timeout", defaults.RetryTimeout, "time limit per request, all attempts together (0: the default)")
	fs.StringVar(&c.client.Balancer, "balancer", client.RoundRobinName, `picks each attempt's instance: "round-robin", "p2c" (latency and load aware) or "least-loaded" (by the load instances report in Consul KV: trimsvc -load-report-interval)`)
	fs.DurationVar(&c.client.Retry.HedgeAfter, "hedge-after", 0, "send a second attempt to another instance when the first has not answered after this long (0: off); only for idempotent calls, as TrimSpace is")
	failStatic := fs.Bool("fail-static", true, "when one update of discovery removes more than half of the instances (a Consul agent restarted), keep calling those still alive on their connections, below any listed, for up to 3m (false: obey the catalog to the letter)")
	throttle := fs.Bool("throttle", true, "when the instances refuse calls for overload (all of them: a refused call is retried on another instance first), refuse some calls here before sending them, by the SRE book's adaptive throttling (K=2, over 1s), so that an overloaded fleet is not flooded; such calls fail with \"client throttled itself\" (false: send every call)")
	fs.IntVar(&c.client.Subset, "subset", 0, "connect to a deterministic subset of at most this many instances rather than to all (0: all); for services with many instances and many callers, see docs/scale.md")
	fs.IntVar(&c.client.SubsetCaller, "subset-caller", 0, "this caller's number among the service's callers, 1, 2, 3, ..., for -subset: numbered callers spread evenly over the instances (0: a number drawn at random)")
	fs.IntVar(&c.n, "n", 1, "requests to send; above 1 prints a load summary")
	fs.DurationVar(&c.duration, "duration", 0, "send requests for this long instead of -n of them, and print a load summary")
	fs.IntVar(&c.c, "c", 1, "concurrent callers, each calling back to back (without -rate)")
	fs.Float64Var(&c.rate, "rate", 0, "calls per second, in an open loop that does not wait for earlier calls (0: the closed loop of -c callers)")
	fs.BoolVar(&c.json, "json", false, "print the summary as one JSON object")
	fs.StringVar(&c.httpAddr, "http-addr", "off", "HTTP address serving /metrics (Prometheus) and /debug/trimkit, the live page of what the client sees of each instance (JSON with Accept: application/json); off disables it")
	if err := cli.Parse(fs, args, envPrefix, synopsis, stdout); err != nil {
		return config{}, err
	}
	c.client.Tags = cli.SplitList(tags)
	c.client.Datacenters = cli.SplitList(dcs)
	c.failStatic.Disabled = !*failStatic
	c.client.Retry.Throttle.Disabled = !*throttle
	var errs []error
	switch m := *read; m {
	case sd.ReadStale, sd.ReadLeader, sd.ReadCache:
		c.client.Read.Mode = m
	default:
		errs = append(errs, fmt.Errorf("-read: read mode %q: must be stale, leader or cache", *read))
	}
	switch fs.NArg() {
	case 1:
		c.text = fs.Arg(0)
	case 0:
		errs = append(errs, errors.New("TEXT to trim is missing"))
	default:
		errs = append(errs, fmt.Errorf("one TEXT argument expected, got %d (quote it)", fs.NArg()))
	}
	if c.n < 1 {
		errs = append(errs, fmt.Errorf("-n must be at least 1, got %d", c.n))
	}
	if c.c < 1 {
		errs = append(errs, fmt.Errorf("-c must be at least 1, got %d", c.c))
	}
	if c.rate < 0 {
		errs = append(errs, fmt.Errorf("-rate must not be negative, got %v", c.rate))
	}
	if c.duration < 0 {
		errs = append(errs, fmt.Errorf("-duration must not be negative, got %v", c.duration))
	}
	if c.duration > 0 && given(fs, "n") {
		errs = append(errs, errors.New("-n and -duration both given: a run is N requests or D long, not both"))
	}
	if c.httpAddr != "off" {
		if _, _, err := net.SplitHostPort(c.httpAddr); err != nil {
			errs = append(errs, fmt.Errorf("-http-addr %q: %w", c.httpAddr, err))
		}
	}
	if c.client.Service == "" {
		errs = append(errs, errors.New("-service-name must not be empty"))
	}
	errs = append(errs, flagErrors(c.client.Validate()))
	if err := errors.Join(errs...); err != nil {
		return config{}, fmt.Errorf("%w: %w", cli.ErrUsage, err)
	}
	return c, nil
}

// flagErrors restates the client's validation errors in terms of flags.
func flagErrors(err error) error {
	if err == nil {
		return nil
	}
	all := []error{err}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		all = joined.Unwrap()
	}
	out := make([]error, 0, len(all))
	for _, e := range all {
		var fe *client.FieldError
		if errors.As(e, &fe) && flagOf[fe.Field] != "" {
			e = fmt.Errorf("%s %v: %s", flagOf[fe.Field], fe.Value, fe.Problem)
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

// given reports whether the flag name was set, on the command line or from
// the environment.
func given(fs *flag.FlagSet, name string) bool {
	found := false
	fs.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	return found
}

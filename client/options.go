package client

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/go-kit/kit/metrics"
	"github.com/go-kit/log"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"

	"github.com/trimkit/trimkit/internal/otelkit"
	"github.com/trimkit/trimkit/sd"
)

// Option changes an optional part of what New and NewFromInstancer
// build.
type Option func(*options)

type options struct {
	logger      log.Logger
	dialOptions []grpc.DialOption
	instancers  *sd.Instancers
	// bandNames and overprovisioning are what discovery in several
	// datacenters sets for the Endpointer (see endpointerOptions).
	bandNames        []string
	overprovisioning float64
}

// instancers is the process's shared Consul watches, for New's clients
// that do not bring their own (WithInstancers).
var instancers sd.Instancers

// WithLogger sets the logger for discovery, connection and ejection
// events. Default: none.
func WithLogger(logger log.Logger) Option { return func(o *options) { o.logger = logger } }

// WithDialOptions adds gRPC dial options to every connection (after the
// transport credentials CallConfig.TLS calls for, which they may
// override).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOptions = append(o.dialOptions, opts...) }
}

// WithInstancers makes New share the Consul watches of p rather than the
// process's: to keep a client's discovery apart from the others'.
func WithInstancers(p *sd.Instancers) Option { return func(o *options) { o.instancers = p } }

func newOptions(opts []Option) (options, error) {
	o := options{logger: log.NewNopLogger(), instancers: &instancers}
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		return options{}, errors.New("WithLogger: nil logger")
	}
	if o.instancers == nil {
		return options{}, errors.New("WithInstancers: nil Instancers")
	}
	return o, nil
}

// EndpointerConfig is how an Endpointer keeps its instances: NewEndpointer
// takes it, and CallConfig holds it for New, NewFromInstancer and NewConn.
// The zero value of each field means its default.
type EndpointerConfig struct {
	// Ejection is how instances that keep failing are ejected. Default:
	// Ejection's zero value, its defaults.
	Ejection Ejection
	// FailStatic is what happens when discovery removes all or most of
	// the instances at once. Default: FailStatic's zero value, on.
	FailStatic FailStatic
	// CloseGrace is how long the connection of an instance that left
	// discovery stays open for the calls in flight on it. Default: 2s; to
	// close it as soon as can be, give 1ns.
	CloseGrace time.Duration
	// Subset, when positive, connects to at most Subset instances rather
	// than to every one: deterministic subsetting, so that when many
	// callers each hold a subset, every instance has as many callers as any
	// other. An instance of the subset that fails or is ejected is covered
	// by the others, and the subset grows into the next instances of its
	// order while fewer than three quarters of Subset of its members are
	// healthy. Turn it on when callers × instances connections cost the
	// instances too much (memory, health checks, keepalives: thousands of
	// connections per instance); see docs/scale.md. Default: 0, every
	// instance.
	Subset int
	// SubsetCaller is this caller's number among the callers of the
	// service, 1, 2, 3, …, for Subset: callers numbered without gaps spread
	// evenly over the instances. Default: 0, a number drawn at random,
	// which spreads callers only as evenly as picking subsets at random.
	SubsetCaller int
	// Metrics are the instruments the Endpointer and its instances report
	// to (and, in a CallConfig, Retry too); any left nil is not reported.
	Metrics Metrics
}

type endpointerOptions struct {
	grace      time.Duration
	ejection   Ejection
	failStatic FailStatic
	metrics    Metrics
	subset     subsetting
	// published, when set, is called (with the Endpointer's lock held)
	// each time it publishes a new snapshot: a ClientConn's balancer
	// passes it on to grpc (see NewConn).
	published func()
	// view is what Handler's page says of the Endpointer.
	view viewInfo
	// bandNames are the datacenters of a banded source, in order (see
	// Config.Datacenters); with more than one, the Endpointer keeps its
	// instances by band, and overprovisioning is the bands' factor.
	bandNames        []string
	overprovisioning float64
}

// subsetting is how an Endpointer picks its subset: size 0 takes every
// instance. number is the caller's, EndpointerConfig.SubsetCaller (0: none);
// caller its place on the ring, number-1 or one drawn at random.
type subsetting struct {
	size, number int
	caller       uint64
}

// minHealthy is how many healthy members a subset needs before it stops
// growing: three quarters of its size, so that an instance or two failing
// are covered by the rest (each taking a little more of the load) and a
// subset grows only when failures take away much of it. Growing at the
// first failure would dial a new instance for every ejection, and under
// load that feeds on itself: a new connection's first calls are slower.
func (s subsetting) minHealthy() int { return max(1, s.size-s.size/4) }

// validate returns nil when every field is in range, else every problem,
// each a *FieldError, joined.
func (c EndpointerConfig) validate() error {
	var errs []error
	if c.CloseGrace < 0 {
		errs = append(errs, &FieldError{"CloseGrace", c.CloseGrace, "must not be negative"})
	}
	if c.Subset < 0 {
		errs = append(errs, &FieldError{"Subset", c.Subset, "must not be negative (0 means every instance)"})
	}
	if c.SubsetCaller < 0 {
		errs = append(errs, &FieldError{"SubsetCaller", c.SubsetCaller, "must not be negative (0 means a number drawn at random)"})
	}
	if c.SubsetCaller > 0 && c.Subset == 0 {
		errs = append(errs, &FieldError{"SubsetCaller", c.SubsetCaller, "numbers a caller for Subset, which is 0 (every instance)"})
	}
	return errors.Join(append(errs, c.Ejection.validate(), c.FailStatic.validate())...)
}

// options checks c and makes the Endpointer's options of it.
func (c EndpointerConfig) options() (endpointerOptions, error) {
	if err := c.validate(); err != nil {
		return endpointerOptions{}, err
	}
	o := endpointerOptions{grace: cmp.Or(c.CloseGrace, 2*time.Second), ejection: c.Ejection, failStatic: c.FailStatic,
		metrics: c.Metrics.resolved(), subset: subsetting{size: c.Subset, number: c.SubsetCaller}}
	o.subset.caller = uint64(o.subset.number - 1)
	if o.subset.number == 0 {
		o.subset.caller = rand.Uint64()
	}
	o.ejection = o.ejection.withDefaults()
	o.failStatic = o.failStatic.withDefaults()
	return o, nil
}

// Ejection is outlier ejection: an instance that fails where its peers do
// not is taken out of picking for BaseTime, doubling with each ejection in
// a row up to MaxTime. Two rules find it:
//
//   - Consecutive failures: its attempts fail ConsecutiveFailures times in
//     a row, as instance failures (see Classify; an attempt that ran out
//     its share of the call's time counts twice, and one outpaced by a
//     hedge to another instance counts too). While its peers fail as
//     well, it takes a streak that their failure rate makes unlikely by
//     chance (one in a million), and when every peer fails, none does:
//     a failure they all share is the service's, not an instance's.
//   - Success rate (SuccessRate): over the last Interval, its success rate
//     sits well below its peers'.
//
// When the time is up the Endpointer probes it (a grpc.health.v1 check on
// its connection, so that no caller's call is the probe) and readmits it
// on probation: its next failure ejects it again at once. An instance that
// cannot be probed is readmitted on probation when its time is up: one
// without a gRPC connection, one whose server has no health service
// (Unimplemented) or whose health service does not know the service name
// (NotFound). Any other answer but SERVING fails the probe and keeps it
// ejected, for longer each time, until one passes. Never more than
// MaxEjectedFraction of the instances, rounded down, are ejected: a service
// of one instance is never ejected, one of three loses at most one.
// The zero value of each field means its default: ConsecutiveFailures 2,
// BaseTime 1s, MaxTime 30s, MaxEjectedFraction 0.5, ProbeTimeout 500ms,
// Classify DefaultClassify, and SuccessRate's (docs/gray-failure.md says
// why).
type Ejection struct {
	Disabled            bool
	ConsecutiveFailures int
	BaseTime            time.Duration
	MaxTime             time.Duration
	MaxEjectedFraction  float64
	// ProbeTimeout bounds the health check of an instance whose ejection
	// is over.
	ProbeTimeout time.Duration
	// HealthService is the service name the probe's health check asks
	// about; "" (the default) is the whole server, as for Consul's check
	// unless sd.Registration.HealthService says otherwise.
	HealthService string
	// Classify says what the error of a failed attempt says of its
	// instance, for ejection, the balancers and Retry (unless
	// RetryConfig.Retryable is set) alike; it holds with ejection
	// Disabled too. It is asked only while the caller's context is live
	// and the attempt has time left, and must be safe for concurrent use.
	// Default: DefaultClassify.
	Classify func(err error) Class
	// SuccessRate is the success-rate rule.
	SuccessRate SuccessRate
}

// SuccessRate is the success-rate rule of Ejection, after Envoy's outlier
// detection: every half Interval, the instances that made MinRequests
// attempts or more within the last Interval (an instance failure, a
// timeout or an attempt outpaced by a hedge is a failure, a response or an
// Answer a success), if there are MinInstances of them or
// more, are compared. An instance is ejected when its success rate is
// below the mean of the others' by more than each of: StdevFactor
// standard deviations of the others' rates, three standard errors of a
// rate over its own attempts (so that chance does not eject it), and 5
// percentage points (so that a few errors in hundreds of calls do not
// cost a share of the capacity). The zero value of each field means its
// default: Interval 1s, MinRequests 100, MinInstances 3, StdevFactor 1.9.
type SuccessRate struct {
	Disabled bool
	// Interval is the window rates are counted over. It is also the
	// window of the peers' failure rate that the consecutive-failures
	// rule weighs a streak against.
	Interval     time.Duration
	MinRequests  int
	MinInstances int
	StdevFactor  float64
}

// defaultEjection is what the stack uses unless told otherwise. Two
// failures in a row, because one can be a blip (a connection that closed
// as its instance restarted) and Retry covers the caller anyway, while two
// without a success between are a pattern. A timeout counts twice: it cost
// its caller a whole share of the call's time, a hundred times a normal
// answer, so a hung instance is ejected one attempt share after it stopped
// answering, even under p2c, which stops picking it before a second
// attempt could time out (and would otherwise let a caller's call be the
// probe once its estimate decayed). One second first, because the probe, not a
// caller, finds out whether it is back; doubling to 30s so that an
// instance that passes its health check but fails real calls costs little.
// Half the instances at most, so that the rest can carry the load.
//
// The success rate over 1s where Envoy counts over 10s: a caller at a few
// hundred calls a second has Envoy's 100 attempts per instance within it,
// and an instance that fails half its calls is out within a second rather
// than ten. Three instances where Envoy asks for five: with the others'
// mean and deviation (Envoy's include the instance itself, which no
// single outlier among fewer than six can then fall 1.9 deviations
// below), two healthy peers are enough to show one that is not.
var defaultEjection = Ejection{
	ConsecutiveFailures: 2,
	BaseTime:            time.Second,
	MaxTime:             30 * time.Second,
	MaxEjectedFraction:  0.5,
	ProbeTimeout:        500 * time.Millisecond,
	Classify:            DefaultClassify,
	SuccessRate: SuccessRate{
		Interval:     time.Second,
		MinRequests:  100,
		MinInstances: 3,
		StdevFactor:  1.9,
	},
}

func (e Ejection) validate() error {
	var errs []error
	if e.ConsecutiveFailures < 0 {
		errs = append(errs, fmt.Errorf("Ejection.ConsecutiveFailures %d: must not be negative", e.ConsecutiveFailures))
	}
	for name, d := range map[string]time.Duration{"Ejection.BaseTime": e.BaseTime, "Ejection.MaxTime": e.MaxTime, "Ejection.ProbeTimeout": e.ProbeTimeout} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s %v: must not be negative", name, d))
		}
	}
	if e.MaxEjectedFraction < 0 || e.MaxEjectedFraction > 1 {
		errs = append(errs, fmt.Errorf("Ejection.MaxEjectedFraction %v: must be within [0, 1]", e.MaxEjectedFraction))
	}
	if e.BaseTime > 0 && e.MaxTime > 0 && e.MaxTime < e.BaseTime {
		errs = append(errs, fmt.Errorf("Ejection.MaxTime %v: below BaseTime %v", e.MaxTime, e.BaseTime))
	}
	sr := e.SuccessRate
	if sr.Interval != 0 && sr.Interval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("Ejection.SuccessRate.Interval %v: must be at least 10ms (0 means the default, 1s)", sr.Interval))
	}
	if sr.MinRequests < 0 {
		errs = append(errs, fmt.Errorf("Ejection.SuccessRate.MinRequests %d: must not be negative (0 means the default, 100)", sr.MinRequests))
	}
	if sr.MinInstances < 0 || sr.MinInstances == 1 {
		errs = append(errs, fmt.Errorf("Ejection.SuccessRate.MinInstances %d: must be at least 2, an instance and a peer to compare it with (0 means the default, 3)", sr.MinInstances))
	}
	if sr.StdevFactor < 0 {
		errs = append(errs, fmt.Errorf("Ejection.SuccessRate.StdevFactor %v: must not be negative (0 means the default, 1.9)", sr.StdevFactor))
	}
	return errors.Join(errs...)
}

func (e Ejection) withDefaults() Ejection {
	d := defaultEjection
	if e.ConsecutiveFailures == 0 {
		e.ConsecutiveFailures = d.ConsecutiveFailures
	}
	if e.BaseTime == 0 {
		e.BaseTime = d.BaseTime
	}
	if e.MaxTime == 0 {
		e.MaxTime = max(d.MaxTime, e.BaseTime)
	}
	if e.MaxEjectedFraction == 0 {
		e.MaxEjectedFraction = d.MaxEjectedFraction
	}
	if e.ProbeTimeout == 0 {
		e.ProbeTimeout = d.ProbeTimeout
	}
	if e.Classify == nil {
		e.Classify = DefaultClassify
	}
	sr, dsr := &e.SuccessRate, d.SuccessRate
	if sr.Interval == 0 {
		sr.Interval = dsr.Interval
	}
	if sr.MinRequests == 0 {
		sr.MinRequests = dsr.MinRequests
	}
	if sr.MinInstances == 0 {
		sr.MinInstances = dsr.MinInstances
	}
	if sr.StdevFactor == 0 {
		sr.StdevFactor = dsr.StdevFactor
	}
	return e
}

// Metrics are the instruments of a client stack, go-kit's interfaces so
// that a program can hang them on Prometheus or anything else (the client
// itself imports no metrics backend): the Endpointer reports to the first
// five (EndpointerConfig.Metrics), Retry to the last four
// (RetryConfig.Metrics); a CallConfig's go to both. Any left nil is not
// reported.
type Metrics struct {
	// Attempts counts every attempt, first ones, retries and hedges, by
	// "instance" (host:port) and "outcome": answered (a response, or an
	// Answer: an error of the application's), failed (an
	// InstanceFailure: Internal, Unavailable, connection closed...),
	// timeout (the attempt's share ran out), outpaced (a hedge answered
	// first), abandoned (the caller gave up), shed (refused at once for
	// overload).
	Attempts metrics.Counter
	// Ejections counts ejections, by "instance".
	Ejections metrics.Counter
	// FailStatic counts the times discovery removed instances en masse and
	// the Endpointer began to hold some (see FailStatic).
	FailStatic metrics.Counter
	// Held is the number of instances held against discovery now.
	Held metrics.Gauge
	// Instances is the number of instances the Endpointer holds now,
	// held ones included: 0 while discovery has found none.
	Instances metrics.Gauge
	// Retries counts attempts after a call's first, hedges excluded.
	Retries metrics.Counter
	// Hedges counts hedged attempts.
	Hedges metrics.Counter
	// BudgetExhausted counts retries and hedges the retry budget refused.
	BudgetExhausted metrics.Counter
	// Throttled counts calls the client refused itself (Throttle).
	Throttled metrics.Counter

	// MeterProvider, when set, reports every instrument above through
	// OpenTelemetry too, as the instruments trimkit.client.attempts,
	// .ejections, .fail_static, .held, .instances, .retries, .hedges,
	// .retry_budget_exhausted and .throttled of the meter
	// github.com/trimkit/trimkit/client, with the same labels as
	// attributes: a program without Prometheus wires one provider. The
	// go-kit instruments set beside it report as well.
	MeterProvider metric.MeterProvider
}

// isZero says whether m has no instrument at all.
func (m Metrics) isZero() bool {
	return m.Attempts == nil && m.Ejections == nil && m.FailStatic == nil && m.Held == nil && m.Instances == nil &&
		m.Retries == nil && m.Hedges == nil && m.BudgetExhausted == nil && m.Throttled == nil && m.MeterProvider == nil
}

// resolved is m with its MeterProvider's instruments beside its own.
func (m Metrics) resolved() Metrics {
	if m.MeterProvider == nil {
		return m
	}
	t := otelkit.NewTee(m.MeterProvider, "github.com/trimkit/trimkit/client", "trimkit.client.")
	c := t.Counter
	g := func(mine metrics.Gauge, name, description string) metrics.Gauge {
		return t.Gauge(mine, name, "{instance}", description)
	}
	m.Attempts = c(m.Attempts, "attempts", "{attempt}", "Attempts of calls, first ones, retries and hedges, by instance and outcome.")
	m.Ejections = c(m.Ejections, "ejections", "{ejection}", "Instances taken out of picking for failing where their peers did not, by instance.")
	m.FailStatic = c(m.FailStatic, "fail_static", "{event}", "Times discovery removed instances en masse and the client began to hold some.")
	m.Held = g(m.Held, "held", "Instances held against discovery now (fail-static).")
	m.Instances = g(m.Instances, "instances", "Instances the client holds now, held ones included.")
	m.Retries = c(m.Retries, "retries", "{attempt}", "Attempts after a call's first, hedges excluded.")
	m.Hedges = c(m.Hedges, "hedges", "{attempt}", "Hedged attempts.")
	m.BudgetExhausted = c(m.BudgetExhausted, "retry_budget_exhausted", "{attempt}", "Retries and hedges the retry budget refused.")
	m.Throttled = c(m.Throttled, "throttled", "{call}", "Calls the client refused itself.")
	m.MeterProvider = nil // resolved once
	return m
}

// attempt counts an attempt. Not through add: its label slice escapes, so
// add would allocate on every attempt even with no counter.
func (m Metrics) attempt(instance string, o outcome) {
	if m.Attempts != nil {
		m.Attempts.With("instance", instance, "outcome", o.String()).Add(1)
	}
}

func add(c metrics.Counter, labelValues ...string) {
	if c != nil {
		c.With(labelValues...).Add(1)
	}
}

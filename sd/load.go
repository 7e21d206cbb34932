package sd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/internal/consulname"
	"github.com/trimkit/trimkit/internal/ctxtime"
)

// LoadReport is what an instance publishes about its load, as JSON at
// consulname.LoadKey(service, id).
type LoadReport struct {
	// Load is the mean number of calls in flight over the last interval
	// (the time spent serving, divided by the interval): all callers' work
	// at once, comparable across instances, and not fooled by a fast
	// instance's high rps.
	Load float64 `json:"load"`
	// Inflight is the number of calls in flight when the report was made.
	Inflight int64 `json:"inflight"`
	// RPS is the calls finished per second over the last interval.
	RPS float64 `json:"rps"`
	// TS is when the report was made, unix seconds.
	TS int64 `json:"ts"`
	// Addr is the host:port callers dial, to match the report to them.
	Addr string `json:"addr"`
	// IntervalMS is how often reports come, for judging freshness.
	IntervalMS int64 `json:"interval_ms"`
}

// loadClient is the part of Consul's HTTP API that load reports use: KV
// and sessions. The Clients of NewClient and ConsulConfig.NewClient have
// it.
type loadClient interface {
	CreateSession(ctx context.Context, s *api.SessionEntry) (string, error)
	// RenewSession renews id; errSessionGone when it no longer exists.
	RenewSession(ctx context.Context, id string) error
	DestroySession(ctx context.Context, id string) error
	// Acquire writes p under its session; false when another session holds
	// the key.
	Acquire(ctx context.Context, p *api.KVPair) (bool, error)
	DeleteKey(ctx context.Context, key string) error
	// List lists the keys under prefix, blocking as q asks.
	List(ctx context.Context, prefix string, q *api.QueryOptions) (api.KVPairs, *api.QueryMeta, error)
}

// errSessionGone says a session was invalidated (its TTL ran out or a
// check it is bound to failed).
var errSessionGone = errors.New("consul session gone")

func (a apiClient) CreateSession(ctx context.Context, s *api.SessionEntry) (string, error) {
	id, _, err := a.c.Session().Create(s, (&api.WriteOptions{}).WithContext(ctx))
	return id, asPermission(err)
}

func (a apiClient) RenewSession(ctx context.Context, id string) error {
	s, _, err := a.c.Session().Renew(id, (&api.WriteOptions{}).WithContext(ctx))
	if err == nil && s == nil {
		return errSessionGone
	}
	return asPermission(err)
}

func (a apiClient) DestroySession(ctx context.Context, id string) error {
	_, err := a.c.Session().Destroy(id, (&api.WriteOptions{}).WithContext(ctx))
	return asPermission(err)
}

func (a apiClient) Acquire(ctx context.Context, p *api.KVPair) (bool, error) {
	ok, _, err := a.c.KV().Acquire(p, (&api.WriteOptions{}).WithContext(ctx))
	return ok, asPermission(err)
}

func (a apiClient) DeleteKey(ctx context.Context, key string) error {
	_, err := a.c.KV().Delete(key, (&api.WriteOptions{}).WithContext(ctx))
	return asPermission(err)
}

func (a apiClient) List(ctx context.Context, prefix string, q *api.QueryOptions) (api.KVPairs, *api.QueryMeta, error) {
	pairs, meta, err := a.c.KV().List(prefix, q.WithContext(ctx))
	return pairs, meta, asPermission(err)
}

// LoadReporter publishes an instance's load every interval under a Consul
// session with a TTL and the delete behaviour: the key of an instance that
// dies goes away with its session, when the TTL runs out or, sooner, when
// a check the session is bound to fails.
type LoadReporter struct {
	client   loadClient
	key      string
	addr     string
	interval time.Duration
	ttl      time.Duration
	checkID  string // the instance's check, "" for none
	sample   func() (inflight int64, busy time.Duration, done int64)
	logger   log.Logger
	opts     loopOptions
}

// NewLoadReporter reports the load sample gives of instance id of service,
// reached at addr, every interval: the calls in flight now, and, since the
// instance started, the time spent serving and the calls finished
// (trimsvc.LoadMeter's Sample gives them). checkID, when not empty, is the
// instance's health check: the session is bound to it, so that the report
// goes as soon as the check fails. opts say how Run reports its failures.
// client is ConsulConfig.NewClient's (or NewClient's): one that also reads
// and writes KV and sessions.
func NewLoadReporter(client Client, service, id, addr, checkID string, interval time.Duration, sample func() (inflight int64, busy time.Duration, done int64), logger log.Logger, opts ...LoopOption) (*LoadReporter, error) {
	lc, ok := client.(loadClient)
	if noClient(client) || !ok || sample == nil || logger == nil {
		return nil, errors.New("sd: NewLoadReporter needs a client of KV and sessions (ConsulConfig.NewClient's), a sample and a logger")
	}
	if interval <= 0 {
		return nil, fmt.Errorf("load report interval %v is not positive", interval)
	}
	key := consulname.LoadKey(service, id)
	return &LoadReporter{client: lc, key: key, addr: addr, interval: interval, ttl: consulname.LoadTTL(interval),
		checkID: checkID, sample: sample, logger: log.With(logger, "load_key", key), opts: newLoopOptions(opts)}, nil
}

// Run reports until ctx ends, then deletes the report and destroys the
// session; it returns nil. A report that cannot be written, whatever the
// reason (Consul unreachable, a 403, TLS refused: a serving instance never
// ends itself over Consul), is tried again at the next interval, with the
// token and TLS files read again when they change; the failure is logged
// at error level when it starts, every minute while it goes on, and once
// it ends, and counted in the metrics of WithFailureMetrics.
func (r *LoadReporter) Run(ctx context.Context) error {
	t := newTrouble("publish the load report", r.logger, r.opts)
	var (
		session               string
		renewed               time.Time
		lastAt                = time.Now()
		_, lastBusy, lastDone = r.sample()
	)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := r.client.DeleteKey(ctx, r.key); err != nil {
			_ = level.Warn(r.logger).Log("msg", "deleting the load report", "err", err)
		}
		if session != "" {
			_ = r.client.DestroySession(ctx, session)
		}
	}()
	for ctxtime.Sleep(ctx, r.interval) {
		if session == "" || time.Since(renewed) >= r.ttl/2 {
			var err error
			if session, err = r.session(ctx, session); err != nil {
				switch {
				case ctx.Err() != nil:
				case checkCritical(err):
					// The session is bound to the instance's check, which
					// starts critical: Consul answered, nothing is wrong.
					t.ok()
					_ = level.Warn(r.logger).Log("msg", "no load report while the instance's check is critical; trying again", "err", err)
				default:
					t.failed(fmt.Errorf("no consul session for load reports: %w", err), r.interval)
				}
				continue
			}
			renewed = time.Now()
		}
		now := time.Now()
		inflight, busy, done := r.sample()
		elapsed := now.Sub(lastAt).Seconds()
		rep := LoadReport{
			Load:       (busy - lastBusy).Seconds() / elapsed,
			Inflight:   inflight,
			RPS:        float64(done-lastDone) / elapsed,
			TS:         now.Unix(),
			Addr:       r.addr,
			IntervalMS: r.interval.Milliseconds(),
		}
		lastAt, lastBusy, lastDone = now, busy, done
		b, _ := json.Marshal(rep)
		ok, err := r.client.Acquire(ctx, &api.KVPair{Key: r.key, Value: b, Session: session})
		switch {
		case err != nil && ctx.Err() != nil:
		case err != nil:
			// Maybe the session is gone ("invalid session"): check it, and
			// make a new one, before the next report.
			t.failed(fmt.Errorf("writing the load report: %w", err), r.interval)
			renewed = time.Time{}
		case !ok:
			// Another session holds the key: a previous instance with this
			// ID, whose session has not expired yet. Consul answered.
			t.ok()
			_ = level.Warn(r.logger).Log("msg", "the load report key is held by another session; trying again")
		default:
			t.ok()
		}
	}
	return nil
}

// session renews session, or creates one when there is none (or it is
// gone).
func (r *LoadReporter) session(ctx context.Context, session string) (string, error) {
	if session != "" {
		err := r.client.RenewSession(ctx, session)
		if err == nil {
			return session, nil
		}
		if !errors.Is(err, errSessionGone) {
			return session, err
		}
	}
	entry := &api.SessionEntry{Name: r.key, TTL: r.ttl.String(), Behavior: api.SessionBehaviorDelete, LockDelay: time.Nanosecond,
		NodeChecks: []string{"serfHealth"}}
	if r.checkID != "" {
		entry.ServiceChecks = []api.ServiceCheck{{ID: r.checkID}}
	}
	return r.client.CreateSession(ctx, entry)
}

// Bounds a LoadWatcher puts on what a report claims: it is written by the
// instances, and an instance (or whoever holds its token) may lie.
const (
	// maxLoadSkew is how far in the future a report's ts may be, by the
	// caller's clock, before the report is refused: clocks differ by a
	// little, a report from the far future is forged.
	maxLoadSkew = 5 * time.Second
	// maxLoadInterval caps the reporting interval a report claims, which
	// says how long it stays fresh: a report cannot make itself fresh for
	// ever.
	maxLoadInterval = time.Minute
	// maxLoad caps a report's load and in-flight count (a negative one is
	// taken as 0): no report can claim to be so idle, or so busy, that it
	// outweighs every other one's by orders of magnitude.
	maxLoad = 1e4
)

// catalog maps an instance's address, as the Instancer reports it, to its
// service ID in the catalog; *Instancer is one.
type catalog interface {
	// serviceID returns the ID of the catalog's instance at addr; false
	// when the catalog lists none there, or several.
	serviceID(addr string) (string, bool)
}

// LoadWatcher keeps the latest load reports of a service's instances,
// watching the reports' KV prefix with rate-limited blocking queries.
//
// A report is trusted only as far as the catalog and the caller's own
// clock allow: it belongs to the instance its key names (the service ID
// after the prefix), never to the address in its body; it is used only for
// an instance the catalog lists; it is fresh for three of its reporting
// intervals (at most a minute) from when this watcher received it,
// whatever the instance's clock says; a ts more than 5s ahead of the
// caller's clock makes it void; and its load and in-flight count are
// clamped to [0, 10000].
type LoadWatcher struct {
	client  loadClient
	prefix  string
	catalog catalog
	logger  log.Logger
	now     func() time.Time
	reports atomic.Pointer[map[string]receivedReport] // by service ID
	cancel  context.CancelFunc
	done    chan struct{}
}

// receivedReport is a report as the watcher took it.
type receivedReport struct {
	LoadReport
	modifyIndex uint64    // of its KV pair: a new write is a new report
	received    time.Time // when this watcher first saw this write
	freshFor    time.Duration
}

// NewLoadWatcher watches the load reports of service until Stop, for the
// instances instancer lists (its watch of service matches each report's
// service ID to an address), through client (ConsulConfig.NewClient's, or
// NewClient's: one that also reads KV). It returns an error for a nil
// argument.
func NewLoadWatcher(client Client, service string, instancer *Instancer, logger log.Logger) (*LoadWatcher, error) {
	if instancer == nil {
		return nil, errors.New("sd: NewLoadWatcher needs an Instancer")
	}
	return newLoadWatcher(client, service, instancer, logger, time.Now)
}

func newLoadWatcher(client Client, service string, catalog catalog, logger log.Logger, now func() time.Time) (*LoadWatcher, error) {
	lc, ok := client.(loadClient)
	if noClient(client) || !ok || catalog == nil || logger == nil {
		return nil, errors.New("sd: NewLoadWatcher needs a client of KV (ConsulConfig.NewClient's), a catalog and a logger")
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &LoadWatcher{client: lc, prefix: consulname.LoadPrefix(service), catalog: catalog, logger: logger, now: now,
		cancel: cancel, done: make(chan struct{})}
	w.reports.Store(&map[string]receivedReport{})
	go w.loop(ctx)
	return w, nil
}

// Report returns the fresh report of the instance at addr: false when the
// catalog lists no single instance there, or its report is missing or
// stale.
func (w *LoadWatcher) Report(addr string) (LoadReport, bool) {
	id, ok := w.catalog.serviceID(addr)
	if !ok {
		return LoadReport{}, false
	}
	r, ok := (*w.reports.Load())[id]
	if !ok || w.now().Sub(r.received) > r.freshFor {
		return LoadReport{}, false
	}
	return r.LoadReport, true
}

// Stop stops the watch and waits for it.
func (w *LoadWatcher) Stop() {
	w.cancel()
	<-w.done
}

func (w *LoadWatcher) loop(ctx context.Context) {
	defer close(w.done)
	watch(ctx, newWatchOptions(), 0, w.query, func(err error, retryIn time.Duration) {
		_ = level.Warn(w.logger).Log("msg", "watching load reports", "prefix", w.prefix, "err", err, "retry_in", retryIn)
	})
}

// query waits for the reports to change from index, and keeps them.
func (w *LoadWatcher) query(ctx context.Context, index uint64) (uint64, error) {
	pairs, meta, err := w.client.List(ctx, w.prefix, &api.QueryOptions{WaitIndex: index, WaitTime: waitTime, AllowStale: true})
	if err != nil || ctx.Err() != nil {
		return index, err
	}
	now := w.now()
	last := *w.reports.Load()
	reports := make(map[string]receivedReport, len(pairs))
	for _, p := range pairs {
		id := strings.TrimPrefix(p.Key, w.prefix)
		if id == "" || strings.Contains(id, "/") {
			_ = level.Warn(w.logger).Log("msg", "not a load report key", "key", p.Key)
			continue
		}
		if prev, ok := last[id]; ok && prev.modifyIndex == p.ModifyIndex {
			reports[id] = prev // the same write: received when first seen
			continue
		}
		r, err := takeReport(p.Value, now)
		if err != nil {
			_ = level.Warn(w.logger).Log("msg", "load report refused", "key", p.Key, "err", err)
			continue
		}
		r.modifyIndex = p.ModifyIndex
		reports[id] = r
	}
	w.reports.Store(&reports)
	return meta.LastIndex, nil
}

// takeReport decodes a report received at now, refusing or clamping what
// it claims beyond the bounds.
func takeReport(b []byte, now time.Time) (receivedReport, error) {
	var r LoadReport
	if err := json.Unmarshal(b, &r); err != nil {
		return receivedReport{}, err
	}
	if ts := time.Unix(r.TS, 0); ts.After(now.Add(maxLoadSkew)) {
		return receivedReport{}, fmt.Errorf("ts %d is %v ahead of this clock", r.TS, ts.Sub(now).Round(time.Second))
	}
	interval := time.Duration(r.IntervalMS) * time.Millisecond
	if interval <= 0 {
		return receivedReport{}, fmt.Errorf("interval_ms %d is not positive", r.IntervalMS)
	}
	r.Load = min(max(r.Load, 0), maxLoad) // NaN cannot come from JSON
	r.Inflight = min(max(r.Inflight, 0), int64(maxLoad))
	return receivedReport{LoadReport: r, received: now, freshFor: 3*min(interval, maxLoadInterval) + time.Second}, nil
}

// checkCritical reports whether err is Consul's refusal of a session bound
// to a check that is critical: a 500 whose body says "Check '<id>' is in
// critical state". consul/api gives it as an api.StatusError, its body
// the only word of the cause. TestCheckCriticalIsConsuls pins it to a real
// agent's answer.
func checkCritical(err error) bool { return consulFailed(err, "is in critical state") }

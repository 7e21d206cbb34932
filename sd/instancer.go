package sd

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/internal/consulname"
	"github.com/trimkit/trimkit/internal/watchstate"
)

const (
	// firstQueryTimeout bounds the query NewInstancer makes before it
	// returns, so that a caller knows the instances from the start.
	firstQueryTimeout = 5 * time.Second
	// waitTime is how long one blocking query may wait for a change.
	waitTime = 5 * time.Minute
	// Backoff between failed queries.
	minQueryBackoff = 50 * time.Millisecond
	maxQueryBackoff = 5 * time.Second
)

// Instancer yields the instances of one Consul service as host:port strings,
// watching the health API with blocking queries. It implements go-kit's
// sd.Instancer. Unlike go-kit's sd/consul Instancer, Stop cancels the
// blocking query in flight and returns only once the watch goroutine has
// exited, so nothing outlives it.
//
// When Consul cannot be reached, subscribers get an Event with Err set; the
// instances known last stay in State and in the Event, so callers can keep
// using them.
type Instancer struct {
	w    *watcher
	stop func() // stops the watch, or lets go of a shared one
	once sync.Once
}

// watcher is an Instancer's watch, which Instancers may share between
// several Instancers.
type watcher struct {
	client      Client
	service     string
	tags        []string
	passingOnly bool
	logger      log.Logger
	opts        watchOptions

	cancel context.CancelFunc
	done   chan struct{}

	// byAddr holds the entry of each address of the answer known last,
	// the zero Entry where several share it: read on every least-loaded
	// pick, so without a lock.
	byAddr atomic.Pointer[map[string]Entry]

	// hinted says a NoInstancesError gave consulname.UnreachableHint already.
	hinted atomic.Bool

	mu    sync.Mutex
	state kitsd.Event
	subs  map[chan<- kitsd.Event]struct{}
	seen  watchSeen // for MarshalJSON
}

// watchSeen is what the watch's queries last said of themselves.
type watchSeen struct {
	index        uint64        // X-Consul-Index of the last answer
	answered     time.Time     // when the last answer came; zero: none yet
	behindLeader time.Duration // its X-Consul-LastContact
	errSince     time.Time     // when queries began to fail, while they do
}

var _ kitsd.Instancer = (*Instancer)(nil)

// NewInstancer watches service (only instances carrying every tag in tags,
// and only passing ones when passingOnly) through client. It makes the first
// query before it returns, waiting at most 5s, and keeps watching until
// Stop. The watch never loops hot: its queries are rate limited (4 a
// second, in bursts of 4) and a failed one is retried after a backoff with
// jitter, 50ms doubling to 5s. Any server answers (stale reads; an
// Instancers' Instancer reads as its Read says). It returns an error for a
// nil client or logger or a name or tag Consul cannot hold, and never for
// Consul being unreachable: the watch goes on trying, and its events' Err
// (and NoInstances) say why it has nothing.
func NewInstancer(client Client, logger log.Logger, service string, tags []string, passingOnly bool) (*Instancer, error) {
	return newInstancer(client, logger, service, tags, passingOnly, newWatchOptions())
}

// newInstancer is NewInstancer with the watch's options o.
func newInstancer(client Client, logger log.Logger, service string, tags []string, passingOnly bool, o watchOptions) (*Instancer, error) {
	w, err := newWatcher(client, logger, service, tags, passingOnly, o)
	if err != nil {
		return nil, err
	}
	return &Instancer{w: w, stop: w.stop}, nil
}

// NoInstances explains a call that found no instance: a
// *NoInstancesError naming the service, its tags, the Consul agent and the
// last query's error. It wraps lb.ErrNoEndpoints. The first one whose
// query failed because the agent could not be reached (an
// *UnreachableError) carries a Hint of what to do; later ones do not.
func (s *Instancer) NoInstances() error { return s.w.noInstances() }

// Register implements sd.Instancer: ch gets the current state at once, then
// every change until Deregister.
func (s *Instancer) Register(ch chan<- kitsd.Event) { s.w.register(ch) }

// Deregister implements sd.Instancer.
func (s *Instancer) Deregister(ch chan<- kitsd.Event) { s.w.deregister(ch) }

// Stop cancels the watch, the blocking query in flight included, and waits
// for it to end. It is safe to call more than once.
func (s *Instancer) Stop() { s.once.Do(s.stop) }

// MarshalJSON is the watch's state, for a status page (client.Handler
// shows it): the service and tags it watches, the Consul agent it asks,
// the instances it knows, the index and time of its last answer and how
// far behind the leader that answer was, and, while its queries fail, the
// last error and since when. stale says the instances known may be out of
// date: the queries fail, or the last answer came from a server further
// behind the leader than Read.MaxStale allows (with no leader to ask
// instead).
func (s *Instancer) MarshalJSON() ([]byte, error) { return s.w.marshalJSON() }

// Entry is the catalog entry of the instance at addr ("host:port") in the
// answer known last: its service ID, node, tags, meta, locality. false
// when the answer has no instance there, or several. Do not modify it, nor
// its Tags or Meta.
func (s *Instancer) Entry(addr string) (Entry, bool) { return s.w.entry(addr) }

// serviceID is the service ID of the instance at addr in the answer known
// last (a LoadWatcher's catalog).
func (s *Instancer) serviceID(addr string) (string, bool) { return s.w.serviceID(addr) }

// newWatcher starts a watch of service and makes its first query.
func newWatcher(client Client, logger log.Logger, service string, tags []string, passingOnly bool, o watchOptions) (*watcher, error) {
	if noClient(client) || logger == nil {
		return nil, errors.New("sd: NewInstancer needs a Consul client and a logger")
	}
	if err := consulname.ValidServiceName(service); err != nil {
		return nil, err
	}
	for _, tag := range tags {
		if err := consulname.ValidTag(tag); err != nil {
			return nil, err
		}
	}
	if err := o.read.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &watcher{
		client:      client,
		service:     service,
		tags:        slices.Clone(tags),
		passingOnly: passingOnly,
		logger:      log.With(logger, "service", service, "tags", fmt.Sprint(tags)),
		opts:        o,
		cancel:      cancel,
		done:        make(chan struct{}),
		subs:        map[chan<- kitsd.Event]struct{}{},
	}
	firstCtx, firstCancel := context.WithTimeout(ctx, firstQueryTimeout)
	instances, byAddr, last, err := s.query(firstCtx, 0)
	firstCancel()
	var index uint64
	if err != nil {
		_ = level.Warn(s.logger).Log("msg", "first consul query failed", "err", err)
		s.state = kitsd.Event{Err: err}
	} else {
		s.state = kitsd.Event{Instances: instances}
		s.byAddr.Store(&byAddr)
		index = nextIndex(0, last)
	}
	go s.loop(ctx, index)
	return s, nil
}

func (s *watcher) noInstances() error {
	where := "consul"
	if a, ok := s.client.(interface{ Address() string }); ok && a.Address() != "" {
		where = "consul at " + a.Address()
	}
	if dc := datacenterOf(s.client); dc != "" {
		where += ", datacenter " + dc
	}
	e := &NoInstancesError{Service: s.service, Tags: s.tags, Where: where, Discovery: s.current().Err, Err: lb.ErrNoEndpoints}
	if errors.As(e.Discovery, new(*UnreachableError)) && !s.hinted.Load() && !s.hinted.Swap(true) {
		e.Hint = consulname.UnreachableHint
	}
	return e
}

func (s *watcher) current() kitsd.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.copyState()
}

func (s *watcher) register(ch chan<- kitsd.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subs[ch] = struct{}{}
	ch <- s.copyState()
}

func (s *watcher) deregister(ch chan<- kitsd.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.subs, ch)
}

func (s *watcher) stop() {
	s.cancel()
	<-s.done
}

func (s *watcher) loop(ctx context.Context, index uint64) {
	defer close(s.done)
	watch(ctx, s.opts, index, func(ctx context.Context, index uint64) (uint64, error) {
		instances, byAddr, last, err := s.query(ctx, index)
		if err == nil && ctx.Err() == nil {
			s.update(instances, byAddr, nil)
		}
		return last, err
	}, func(err error, retryIn time.Duration) {
		_ = level.Warn(s.logger).Log("msg", "consul query failed; keeping the last known instances", "err", err, "retry_in", retryIn)
		s.update(nil, nil, err)
	})
}

// update records a query's result and tells subscribers when something
// changed. A failed query keeps the instances known last.
func (s *watcher) update(instances []string, byAddr map[string]Entry, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.state.Err != nil {
			s.state.Err = err
			return // subscribers already know Consul is failing
		}
		s.state.Err = err
		s.seen.errSince = time.Now()
	} else {
		s.byAddr.Store(&byAddr) // entries (IDs, tags, locality) may change while the addresses stay
		if s.state.Err == nil && slices.Equal(s.state.Instances, instances) {
			return
		}
		s.state = kitsd.Event{Instances: instances}
	}
	for ch := range s.subs {
		ch <- s.copyState()
	}
}

func (s *watcher) copyState() kitsd.Event {
	return kitsd.Event{Instances: slices.Clone(s.state.Instances), Err: s.state.Err}
}

func (s *watcher) serviceID(addr string) (string, bool) {
	e, ok := s.entry(addr)
	return e.ID, ok
}

// entry is the entry of the instance at addr in the answer known last.
func (s *watcher) entry(addr string) (Entry, bool) {
	byAddr := s.byAddr.Load()
	if byAddr == nil {
		return Entry{}, false
	}
	e := (*byAddr)[addr]
	return e, e.ID != ""
}

// nextIndex is the index to block on after a query that waited on prev
// answered with last, as Consul's blocking-query guidance says: an index
// that went backwards (a restarted agent, a new leader's snapshot) starts
// over from 0, and 0 itself, which would make the next query return at once
// and loop hot, becomes 1.
func nextIndex(prev, last uint64) uint64 {
	if last < prev {
		return 0
	}
	return max(last, 1)
}

// query asks the health API for the service's instances, blocking while
// index is current, and returns them with their entries by address.
func (s *watcher) query(ctx context.Context, index uint64) ([]string, map[string]Entry, uint64, error) {
	stale, cache := s.opts.read.mode() != ReadLeader, s.opts.read.mode() == ReadCache
	q := &api.QueryOptions{WaitIndex: index, WaitTime: waitTime, AllowStale: stale, UseCache: cache}
	entries, meta, err := s.client.Service(ctx, s.service, s.tags, s.passingOnly, q)
	if err == nil && s.opts.read.mode() == ReadStale && meta.LastContact > cmp.Or(s.opts.read.MaxStale, defaultMaxStale) {
		if meta.KnownLeader {
			// Too far behind while there is a leader: ask the leader, now.
			entries, meta, err = s.client.Service(ctx, s.service, s.tags, s.passingOnly, &api.QueryOptions{})
		} else {
			_ = level.Warn(s.logger).Log("msg", "no consul leader; using a stale answer", "behind_leader", meta.LastContact)
		}
	}
	if err != nil {
		err = fmt.Errorf("query consul for %s: %w", s.service, err)
		if unreachable(err) && ctx.Err() == nil {
			// Nothing answered: no leader to ask about either.
			return nil, nil, index, &UnreachableError{Addr: agentAddr(s.client, err), Err: err}
		}
		return nil, nil, index, s.explain(ctx, err)
	}
	if meta.ResultsFilteredByACLs && len(entries) == 0 {
		return nil, nil, index, &filteredError{Service: s.service}
	}
	if meta.ResultsFilteredByACLs {
		_ = level.Warn(s.logger).Log("msg", "consul filtered some instances out by ACLs (the token lacks node:read on their nodes?)", "visible", len(entries))
	}
	instances := make([]string, 0, len(entries))
	byAddr := make(map[string]Entry, len(entries))
	for _, e := range entries {
		hostPort := e.hostPort()
		instances = append(instances, hostPort)
		if _, dup := byAddr[hostPort]; dup {
			byAddr[hostPort] = Entry{} // two instances at one address: neither is known by it
		} else {
			byAddr[hostPort] = e
		}
	}
	slices.Sort(instances)
	s.mu.Lock()
	// Not KnownLeader: Consul answers a stale blocking query that waited
	// with X-Consul-KnownLeader false, leader or not.
	s.seen.index, s.seen.answered, s.seen.behindLeader = meta.LastIndex, time.Now(), meta.LastContact
	s.mu.Unlock()
	return slices.Compact(instances), byAddr, meta.LastIndex, nil
}

// errNoLeader says that the Consul servers have no leader (quorum lost):
// only stale reads (ReadStale) or the agent's cache (ReadCache) can answer.
var errNoLeader = errors.New("consul has no leader (quorum lost?); only stale reads or the agent cache can answer")

// explain adds errNoLeader to a failed query's error when the servers have
// no leader: a leader's read then fails only after the servers' hold
// timeout (7s), as a bare timeout or a 500. A query cancelled by Stop is
// not explained: nobody waits for it. One that ran out its time (the first
// query's 5s, shorter than the servers' hold) is: that is how a leader's
// read fails without a leader.
func (s *watcher) explain(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	// The agent forwards the question to a server; one that has just
	// stopped fails it, and the agent asks another the next time.
	for range 3 {
		leader, lerr := s.client.Leader(ctx)
		switch {
		case lerr == nil && leader == "", noClusterLeader(lerr):
			return fmt.Errorf("%w: %w", errNoLeader, err)
		case lerr == nil || ctx.Err() != nil:
			return err
		}
	}
	return err
}

// filteredError says that Consul's answer held nothing because its ACLs
// filtered every instance out (X-Consul-Results-Filtered-By-ACLs): the
// token lacks service:read on the service, or node:read on the nodes.
type filteredError struct {
	Service string
	// Anonymous says no token was given: Consul enforces ACLs and the
	// anonymous token may read nothing (Consul does not say it filtered an
	// answer to the anonymous token; the client asked).
	Anonymous bool
}

func (e *filteredError) Error() string {
	msg := fmt.Sprintf("consul filtered the answer by ACLs: the token needs service:read on %q and node:read on its nodes", e.Service)
	if e.Anonymous {
		msg += " (no token was given: -consul-token-file, CONSUL_HTTP_TOKEN_FILE)"
	}
	return msg
}

// datacenterOf is the datacenter client's queries read, "" for its
// agent's own (or when it does not say).
func datacenterOf(client Client) string {
	if d, ok := client.(interface{ Datacenter() string }); ok {
		return d.Datacenter()
	}
	return ""
}

// noClusterLeader reports whether err is a server's answer that it knows
// no leader: a 500 whose body is "No cluster leader", which consul/api
// gives as an api.StatusError. TestNoClusterLeaderIsConsulAPIs pins it to
// consul/api's own error for that answer.
func noClusterLeader(err error) bool { return consulFailed(err, "No cluster leader") }

func (s *watcher) marshalJSON() ([]byte, error) {
	s.mu.Lock()
	j := watchstate.State{Service: s.service, Tags: s.tags, Consul: agentAddr(s.client, nil), Datacenter: datacenterOf(s.client), Instances: slices.Clone(s.state.Instances),
		LastIndex: s.seen.index, BehindLeaderMS: float64(s.seen.behindLeader) / 1e6}
	if j.Instances == nil {
		j.Instances = []string{}
	}
	if !s.seen.answered.IsZero() {
		at := s.seen.answered
		j.LastAnswer = &at
	}
	if err := s.state.Err; err != nil {
		since := s.seen.errSince
		j.Error, j.ErrorSince = err.Error(), &since
	}
	behind := s.seen.behindLeader
	s.mu.Unlock()
	j.Stale = j.Error != "" || j.LastAnswer == nil ||
		(s.opts.read.mode() == ReadStale && behind > cmp.Or(s.opts.read.MaxStale, defaultMaxStale))
	return json.Marshal(j)
}

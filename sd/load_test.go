package sd_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/internal/consulname"
	"github.com/trimkit/trimkit/sd"
)

// fakeKV is the KV and sessions of an sd.Client over a map, with sessions
// the test can invalidate and errors it can inject; the rest of the
// Client is never called.
type fakeKV struct {
	sd.Client
	mu         sync.Mutex
	kv         map[string]*api.KVPair
	sessions   map[string]*api.SessionEntry
	created    int
	destroyed  []string
	writes     chan api.KVPair
	acquireErr error
	index      uint64
}

func newFakeKV() *fakeKV {
	return &fakeKV{kv: map[string]*api.KVPair{}, sessions: map[string]*api.SessionEntry{}, writes: make(chan api.KVPair, 100)}
}

func (f *fakeKV) CreateSession(_ context.Context, s *api.SessionEntry) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.created++
	id := "session-" + string(rune('0'+f.created))
	f.sessions[id] = s
	return id, nil
}

func (f *fakeKV) RenewSession(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sessions[id] == nil {
		return sd.ErrSessionGone
	}
	return nil
}

func (f *fakeKV) DestroySession(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.sessions, id)
	f.destroyed = append(f.destroyed, id)
	return nil
}

// invalidate ends every session, as a TTL running out would, deleting
// the keys they hold.
func (f *fakeKV) invalidate() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id := range f.sessions {
		delete(f.sessions, id)
		for k, p := range f.kv {
			if p.Session == id {
				delete(f.kv, k)
			}
		}
	}
	f.index++
}

func (f *fakeKV) Acquire(_ context.Context, p *api.KVPair) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.acquireErr != nil {
		return false, f.acquireErr
	}
	if f.sessions[p.Session] == nil {
		return false, errors.New("invalid session")
	}
	if held := f.kv[p.Key]; held != nil && held.Session != p.Session {
		return false, nil
	}
	f.index++
	cp := *p
	cp.ModifyIndex = f.index
	f.kv[p.Key] = &cp
	f.writes <- cp
	return true, nil
}

func (f *fakeKV) DeleteKey(_ context.Context, key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.kv, key)
	f.index++
	return nil
}

func (f *fakeKV) List(ctx context.Context, prefix string, q *api.QueryOptions) (api.KVPairs, *api.QueryMeta, error) {
	for {
		f.mu.Lock()
		if f.index > q.WaitIndex || q.WaitIndex == 0 {
			var pairs api.KVPairs
			for k, p := range f.kv {
				if strings.HasPrefix(k, prefix) {
					cp := *p
					pairs = append(pairs, &cp)
				}
			}
			idx := f.index
			f.mu.Unlock()
			return pairs, &api.QueryMeta{LastIndex: max(idx, 1)}, nil
		}
		f.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (f *fakeKV) has(key string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.kv[key] != nil
}

func nextWrite(t *testing.T, f *fakeKV) (api.KVPair, sd.LoadReport) {
	t.Helper()
	select {
	case p := <-f.writes:
		var r sd.LoadReport
		if err := json.Unmarshal(p.Value, &r); err != nil {
			t.Fatalf("report %q: %v", p.Value, err)
		}
		return p, r
	case <-time.After(5 * time.Second):
		t.Fatal("no load report written")
		panic("unreachable")
	}
}

func TestLoadReporterReportsAndCleansUp(t *testing.T) {
	f := newFakeKV()
	// Busy all the time from the first sample on (Run takes it as it
	// starts), with 5 calls done between samples: whenever the reporter
	// samples, the load since its last sample is near 1 and rps above 0.
	var (
		mu      sync.Mutex
		start   time.Time
		samples int64
	)
	sample := func() (int64, time.Duration, int64) {
		mu.Lock()
		defer mu.Unlock()
		samples++
		if start.IsZero() {
			start = time.Now()
		}
		return 3, time.Since(start), 5 * (samples - 1)
	}
	r, err := sd.NewLoadReporter(f, "trimsvc", "trimsvc-1", "127.0.0.1:9000", "service:trimsvc-1", 50*time.Millisecond, sample, log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan error, 1)
	go func() { result <- r.Run(ctx) }()

	p, rep := nextWrite(t, f)
	if p.Key != "trimkit/load/trimsvc/trimsvc-1" || rep.Addr != "127.0.0.1:9000" || rep.Inflight != 3 || rep.IntervalMS != 50 {
		t.Errorf("first report %s = %+v", p.Key, rep)
	}
	f.mu.Lock()
	s := f.sessions[p.Session]
	f.mu.Unlock()
	if s == nil || s.Behavior != api.SessionBehaviorDelete || s.TTL != "10s" ||
		len(s.ServiceChecks) != 1 || s.ServiceChecks[0].ID != "service:trimsvc-1" || len(s.NodeChecks) != 1 {
		t.Errorf("session %+v: want delete behaviour, TTL 10s, bound to serfHealth and the service check", s)
	}

	_, rep = nextWrite(t, f)
	if rep.Load <= 0 || rep.Load > 1.5 || rep.RPS <= 0 {
		t.Errorf("report after a busy interval = %+v: want load in (0, 1.5] and rps > 0", rep)
	}

	// The session goes (its TTL ran out, or its check failed): the next
	// write fails, and the reporter makes a new session at once rather
	// than at its next renewal, 5s away.
	f.invalidate()
	waitFor(t, 2*time.Second, "a report again after the session was invalidated", func() bool { return f.has(p.Key) })
	f.mu.Lock()
	created := f.created
	f.mu.Unlock()
	if created != 2 {
		t.Errorf("%d sessions created, want 2 (a new one after the first was invalidated)", created)
	}

	cancel()
	if err := <-result; err != nil {
		t.Errorf("Run = %v, want nil at the end of ctx", err)
	}
	if f.has(p.Key) {
		t.Error("the report is still there after Run ended")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.sessions) != 0 {
		t.Errorf("sessions left after Run ended: %v", f.sessions)
	}
}

func TestNewLoadReporterBadInterval(t *testing.T) {
	_, err := sd.NewLoadReporter(newFakeKV(), "s", "i", "a:1", "", 0, func() (int64, time.Duration, int64) { return 0, 0, 0 }, log.NewNopLogger())
	if err == nil {
		t.Error("interval 0: want an error")
	}
}

func TestLoadTTL(t *testing.T) {
	for in, want := range map[time.Duration]time.Duration{time.Second: 10 * time.Second, 5 * time.Second: 15 * time.Second} {
		if got := consulname.LoadTTL(in); got != want {
			t.Errorf("LoadTTL(%v) = %v, want %v", in, got, want)
		}
	}
}

// putter writes KV pairs into f under one session.
func putter(t *testing.T, f *fakeKV) func(key string, v any) {
	id, _ := f.CreateSession(context.Background(), &api.SessionEntry{})
	return func(key string, v any) {
		t.Helper()
		b, ok := v.([]byte)
		if !ok {
			b, _ = json.Marshal(v)
		}
		if ok, err := f.Acquire(context.Background(), &api.KVPair{Key: key, Value: b, Session: id}); !ok || err != nil {
			t.Fatalf("put %s: %v %v", key, ok, err)
		}
	}
}

func TestLoadWatcher(t *testing.T) {
	f := newFakeKV()
	put := putter(t, f)
	now := time.Now().Unix()
	put("trimkit/load/trimsvc/a", sd.LoadReport{Load: 2.5, Addr: "127.0.0.1:9000", TS: now, IntervalMS: 1000})
	put("trimkit/load/trimsvc/bad", []byte("not json"))
	put("trimkit/load/othersvc/b", sd.LoadReport{Load: 9, Addr: "127.0.0.1:9001", TS: now, IntervalMS: 1000})

	catalog := sd.CatalogMap{"127.0.0.1:9000": "a", "127.0.0.1:9001": "b"}
	w, err := sd.NewLoadWatcherOf(f, "trimsvc", catalog, log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	waitFor(t, 5*time.Second, "the report of a", func() bool { r, ok := w.Report("127.0.0.1:9000"); return ok && r.Load == 2.5 })
	if _, ok := w.Report("127.0.0.1:9001"); ok {
		t.Error("a report of another service was taken")
	}

	f.invalidate()
	waitFor(t, 5*time.Second, "the report to go with its session", func() bool { _, ok := w.Report("127.0.0.1:9000"); return !ok })
}

// Reports are written by the instances, and a token that writes one may
// write others: the watcher trusts a report only for the instance its key
// names, as the catalog lists it, and only within bounds of its own.
func TestLoadWatcherRefusesForgedReports(t *testing.T) {
	f := newFakeKV()
	put := putter(t, f)
	var clock atomic.Pointer[time.Time]
	start := time.Now()
	clock.Store(&start)
	advance := func(d time.Duration) { t := clock.Load().Add(d); clock.Store(&t) }
	ts := start.Unix()
	catalog := sd.CatalogMap{"127.0.0.1:9000": "a", "127.0.0.1:9001": "b", "127.0.0.1:9002": "c", "127.0.0.1:9003": "d", "127.0.0.1:9004": "e"}
	// a ghost key, for no instance in the catalog, claiming a's address
	put("trimkit/load/trimsvc/ghost", sd.LoadReport{Load: -1e300, TS: 99999999999, Addr: " 127.0.0.1:9000 ", IntervalMS: 1000})
	// b's key, claiming c's address: it is b's report, whatever it says
	put("trimkit/load/trimsvc/b", sd.LoadReport{Load: 7, TS: ts, Addr: "127.0.0.1:9002", IntervalMS: 1000})
	// c's key with a load far out of range, and a clock an hour behind
	put("trimkit/load/trimsvc/c", sd.LoadReport{Load: 1e300, Inflight: -5, TS: ts - 3600, Addr: "127.0.0.1:9002", IntervalMS: 1000})
	// d's key from the far future
	put("trimkit/load/trimsvc/d", sd.LoadReport{Load: 1, TS: 99999999999, Addr: "127.0.0.1:9003", IntervalMS: 1000})
	// e's key, claiming to stay fresh for a year
	put("trimkit/load/trimsvc/e", sd.LoadReport{Load: -3, TS: ts, Addr: "127.0.0.1:9004", IntervalMS: 365 * 24 * 3600 * 1000})

	w := sd.NewLoadWatcherWithClock(f, "trimsvc", catalog, log.NewNopLogger(), func() time.Time { return *clock.Load() })
	defer w.Stop()
	waitFor(t, 5*time.Second, "the reports", func() bool { _, ok := w.Report("127.0.0.1:9004"); return ok })

	if _, ok := w.Report("127.0.0.1:9000"); ok {
		t.Error("a's address has a report: the ghost's")
	}
	if r, ok := w.Report("127.0.0.1:9001"); !ok || r.Load != 7 {
		t.Errorf("b's report: want load 7 by its key, have %+v %v", r, ok)
	}
	r, ok := w.Report("127.0.0.1:9002")
	if !ok {
		t.Fatal("c's report, an hour behind by its own clock but just received: want it fresh")
	}
	if want, have := sd.MaxLoad, r.Load; want != have {
		t.Errorf("c's load of 1e300: want it clamped to %v, have %v", want, have)
	}
	if r.Inflight != 0 {
		t.Errorf("c's inflight of -5: want 0, have %d", r.Inflight)
	}
	if _, ok := w.Report("127.0.0.1:9003"); ok {
		t.Error("d's report from the far future was taken")
	}
	if r, _ := w.Report("127.0.0.1:9004"); r.Load != 0 {
		t.Errorf("e's load of -3: want 0, have %v", r.Load)
	}
	if _, ok := w.Report("127.0.0.1:9999"); ok {
		t.Error("an address the catalog does not list has a report")
	}

	// Freshness is by when the watcher received a report: c's (1s
	// interval) is stale 3s and a second later, e's a year's claim is
	// capped.
	advance(5 * time.Second)
	if _, ok := w.Report("127.0.0.1:9002"); ok {
		t.Error("c's report 5s after it was received, with a 1s interval: want it stale")
	}
	if _, ok := w.Report("127.0.0.1:9004"); !ok {
		t.Error("e's report 5s after it was received: want it fresh")
	}
	advance(3*sd.MaxLoadInterval + time.Second)
	if _, ok := w.Report("127.0.0.1:9004"); ok {
		t.Error("e's report, claiming a year's interval, 3 minutes later: want it stale")
	}
	// A new write is a new report, received now.
	put("trimkit/load/trimsvc/c", sd.LoadReport{Load: 3, TS: ts, IntervalMS: 1000})
	waitFor(t, 5*time.Second, "c's new report", func() bool { r, ok := w.Report("127.0.0.1:9002"); return ok && r.Load == 3 })
}

// waitFor polls cond every 10ms until it holds, failing the test if it
// does not within the given time.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

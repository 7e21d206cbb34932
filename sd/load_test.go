package sd_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/sd"
)

// fakeKV is an sd.LoadClient over a map, with sessions the test can
// invalidate and errors it can inject.
type fakeKV struct {
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
	cp := *p
	f.kv[p.Key] = &cp
	f.index++
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

func TestLoadReporterPermanentError(t *testing.T) {
	f := newFakeKV()
	f.acquireErr = &sd.PermissionError{Permission: `'key:write' on "trimkit/load/trimsvc/a"`}
	r, err := sd.NewLoadReporter(f, "trimsvc", "a", "127.0.0.1:1", "", 10*time.Millisecond,
		func() (int64, time.Duration, int64) { return 0, 0, 0 }, log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = r.Run(ctx)
	var pe *sd.PermissionError
	if !errors.As(err, &pe) || ctx.Err() != nil {
		t.Fatalf("Run = %v, want the permission error at once", err)
	}
	if !strings.Contains(err.Error(), "key:write") {
		t.Errorf("error %q does not name the permission", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.sessions) != 0 {
		t.Errorf("sessions left after a permanent failure: %v", f.sessions)
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
		if got := sd.LoadTTL(in); got != want {
			t.Errorf("LoadTTL(%v) = %v, want %v", in, got, want)
		}
	}
}

func TestLoadWatcher(t *testing.T) {
	f := newFakeKV()
	id, _ := f.CreateSession(context.Background(), &api.SessionEntry{})
	put := func(key string, v []byte) {
		if ok, err := f.Acquire(context.Background(), &api.KVPair{Key: key, Value: v, Session: id}); !ok || err != nil {
			t.Fatalf("put %s: %v %v", key, ok, err)
		}
	}
	good, _ := json.Marshal(sd.LoadReport{Load: 2.5, Addr: "127.0.0.1:9000"})
	put("trimkit/load/trimsvc/a", good)
	put("trimkit/load/trimsvc/bad", []byte("not json"))
	other, _ := json.Marshal(sd.LoadReport{Load: 9, Addr: "127.0.0.1:9001"})
	put("trimkit/load/othersvc/b", other)

	w := sd.NewLoadWatcher(f, "trimsvc", log.NewNopLogger())
	defer w.Stop()
	waitFor(t, 5*time.Second, "the report of a", func() bool { r, ok := w.Report("127.0.0.1:9000"); return ok && r.Load == 2.5 })
	if _, ok := w.Report("127.0.0.1:9001"); ok {
		t.Error("a report of another service was taken")
	}

	f.invalidate()
	waitFor(t, 5*time.Second, "the report to go with its session", func() bool { _, ok := w.Report("127.0.0.1:9000"); return !ok })
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

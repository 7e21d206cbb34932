package trimsvc

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/go-kit/kit/metrics"
	"github.com/go-kit/log"
)

func codeOf(err error) string {
	if err != nil {
		return "Failed"
	}
	return "OK"
}

// recorder is a go-kit Counter and Histogram that keeps what it is given,
// by label values.
type recorder struct {
	mu     sync.Mutex
	values map[string][]float64
	lvs    []string
}

func newRecorder() *recorder { return &recorder{values: map[string][]float64{}} }

func (r *recorder) With(lvs ...string) *recorder {
	return &recorder{values: r.values, lvs: append(append([]string(nil), r.lvs...), lvs...)}
}

func (r *recorder) record(v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := strings.Join(r.lvs, ",")
	r.values[key] = append(r.values[key], v)
}

type counter struct{ *recorder }

func (c counter) With(lvs ...string) metrics.Counter { return counter{c.recorder.With(lvs...)} }
func (c counter) Add(v float64)                      { c.record(v) }

type histogram struct{ *recorder }

func (h histogram) With(lvs ...string) metrics.Histogram { return histogram{h.recorder.With(lvs...)} }
func (h histogram) Observe(v float64)                    { h.record(v) }

func TestInstrumentingMiddleware(t *testing.T) {
	requests, durations := newRecorder(), newRecorder()
	base, err := New(4)
	if err != nil {
		t.Fatal(err)
	}
	svc := InstrumentingMiddleware(counter{requests}, histogram{durations}, codeOf)(base)
	ctx := context.Background()
	for _, in := range []string{"a b", "c", "too long"} {
		_, _ = svc.TrimSpace(ctx, in)
	}
	for key, want := range map[string]int{"method,TrimSpace,code,OK": 2, "method,TrimSpace,code,Failed": 1} {
		if have := len(requests.values[key]); have != want {
			t.Errorf("requests %s: want %d, have %d", key, want, have)
		}
		if have := len(durations.values[key]); have != want {
			t.Errorf("durations %s: want %d observations, have %d", key, want, have)
		}
		for _, d := range durations.values[key] {
			if d < 0 {
				t.Errorf("durations %s: negative observation %v", key, d)
			}
		}
	}
	if want, have := 2, len(requests.values); want != have {
		t.Errorf("label sets: want %d, have %d: %v", want, have, requests.values)
	}
}

func TestLoggingMiddleware(t *testing.T) {
	var buf bytes.Buffer
	svc := LoggingMiddleware(log.NewLogfmtLogger(&buf))(fakeService{err: ErrInputTooLarge})
	_, err := svc.TrimSpace(context.Background(), "abc")
	if !errors.Is(err, ErrInputTooLarge) {
		t.Fatalf("error not passed through: %v", err)
	}
	for _, want := range []string{"level=info", "method=TrimSpace", "in_bytes=3", `err="input too large"`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("log %q lacks %q", buf.String(), want)
		}
	}
	// A success is counted by the metrics, not logged.
	buf.Reset()
	if _, err := LoggingMiddleware(log.NewLogfmtLogger(&buf))(fakeService{out: "abc"}).TrimSpace(context.Background(), " abc "); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 0 {
		t.Errorf("a success logged %q", buf.String())
	}
}

type fakeService struct {
	out string
	err error
}

func (f fakeService) TrimSpace(context.Context, string) (string, error) { return f.out, f.err }

func TestLoadMeter(t *testing.T) {
	var m LoadMeter
	block := make(chan struct{})
	svc := m.Middleware()(blockingService{block})
	done := make(chan struct{})
	go func() { _, _ = svc.TrimSpace(context.Background(), "x"); close(done) }()
	for {
		if inflight, _, _ := m.Sample(); inflight == 1 {
			break
		}
		runtime.Gosched()
	}
	close(block)
	<-done
	inflight, busy, finished := m.Sample()
	if inflight != 0 || finished != 1 || busy <= 0 {
		t.Errorf("after one call: in flight %d, busy %v, done %d", inflight, busy, finished)
	}
}

type blockingService struct{ block chan struct{} }

func (b blockingService) TrimSpace(context.Context, string) (string, error) {
	<-b.block
	return "", nil
}

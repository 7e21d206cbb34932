package trimsvc

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func codeOf(err error) string {
	if err != nil {
		return "Failed"
	}
	return "OK"
}

func TestInstrumentingMiddleware(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewPrometheusMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	base, err := New(4)
	if err != nil {
		t.Fatal(err)
	}
	svc := InstrumentingMiddleware(m.Requests, m.Duration, codeOf)(base)
	ctx := context.Background()
	for _, in := range []string{"a b", "c", "too long"} {
		_, _ = svc.TrimSpace(ctx, in)
	}
	want := `
# HELP trimsvc_requests_total Requests handled by the trim service, by method and status code.
# TYPE trimsvc_requests_total counter
trimsvc_requests_total{code="Failed",method="TrimSpace"} 1
trimsvc_requests_total{code="OK",method="TrimSpace"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "trimsvc_requests_total"); err != nil {
		t.Error(err)
	}
	if want, have := 2, testutil.CollectAndCount(reg, "trimsvc_request_duration_seconds"); want != have {
		t.Errorf("duration series: want %d, have %d", want, have)
	}
	if _, err := NewPrometheusMetrics(reg); err == nil {
		t.Error("registering twice: want error, have nil")
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
}

type fakeService struct {
	out string
	err error
}

func (f fakeService) TrimSpace(context.Context, string) (string, error) { return f.out, f.err }

package grpcserver

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/kit/metrics"
	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/trimkit/trimkit/internal/localconsul"
	"github.com/trimkit/trimkit/internal/logbuf"
	"github.com/trimkit/trimkit/internal/pki"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/sd"
)

// value is a metrics.Gauge and, as counter, a metrics.Counter that keeps
// its value.
type value struct {
	mu sync.Mutex
	v  float64
}

func (g *value) With(...string) metrics.Gauge { return g }
func (g *value) Set(v float64)                { g.mu.Lock(); g.v = v; g.mu.Unlock() }
func (g *value) Add(d float64)                { g.mu.Lock(); g.v += d; g.mu.Unlock() }
func (g *value) Value() float64               { g.mu.Lock(); defer g.mu.Unlock(); return g.v }

type counter struct{ *value }

func (c counter) With(...string) metrics.Counter { return c }

// A serving instance through the rotations of its ACL token: a new token
// written to its file and the old one deleted costs it nothing (it stays
// registered, its check's changes still reach the catalog, it serves, and
// it deregisters with the new token); its token deleted with no
// replacement does not end it either: it serves on, says so and counts it,
// and recovers once a valid token is in the file.
func TestInstanceThroughTokenRotations(t *testing.T) {
	s := testenv.SecureConsul(t)
	c := s.API()
	file := filepath.Join(t.TempDir(), "trimsvc.token")
	if err := pki.WriteFile(file, []byte(s.Tokens.Trimsvc+"\n")); err != nil {
		t.Fatal(err)
	}
	client, err := sd.ConsulConfig{Address: s.URL(), TokenFile: file,
		CAFile: s.Security.CA.CertFile, CertFile: s.Security.CLICertFile, KeyFile: s.Security.CLIKeyFile}.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.(interface{ CloseIdleConnections() }).CloseIdleConnections)
	f := newFixture(t, s.Agent, client, sd.Registration{Name: "trimsvc"}, nil)
	var logs logbuf.Buffer
	logger := log.NewLogfmtLogger(&logs)
	failures, failing := counter{&value{}}, &value{}
	r, err := sd.NewRegistrar(client, f.in.Registrar.Registration(), logger, sd.WithFailureMetrics(failures, failing))
	if err != nil {
		t.Fatal(err)
	}
	hs := health.NewServer()
	f.in.Registrar, f.in.Health, f.in.Logger = r, hs, logger
	f.in.ResyncInterval = 200 * time.Millisecond
	cancel, done := f.run(t)
	s.WaitPassing("trimsvc", f.id)
	serves := func(what string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := echo(ctx, f.conn, []byte("x")); err != nil {
			t.Fatalf("%s: a call failed: %v", what, err)
		}
		select {
		case err := <-done:
			t.Fatalf("%s: Run returned: %v", what, err)
		default:
		}
	}

	// Rotation: the new token in the file, then the old one deleted.
	read := func(secret string) *api.ACLToken {
		tok, _, err := c.ACL().TokenReadSelf(&api.QueryOptions{Token: secret})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	secret, err := localconsul.RotateTokenFile(context.Background(), c, nil, file)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "registered again with the new token", func() bool { return logs.Has("registered again with the new ACL token") })
	// The agent syncs the check with the new token: its turns reach the
	// catalog.
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	testenv.WaitPassing(t, c, "trimsvc", localconsul.Count(0))
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.WaitPassing("trimsvc", f.id)
	serves("after the rotation")
	if want, have := 0.0, failures.Value(); want != have {
		t.Errorf("failures counted through the rotation: want %v, have %v", want, have)
	}

	// The token deleted with none to replace it.
	spare, _, err := localconsul.CloneToken(c, secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ACL().TokenDelete(read(secret).AccessorID, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the failure counted and shown", func() bool { return failures.Value() > 0 && failing.Value() == 1 })
	if !logs.Has("level=error", "cannot keep the registration", "ACL not found") {
		t.Errorf("no error line for the deleted token:\n%s", logs.String())
	}
	serves("without a valid token")

	// A valid token in the file: back to normal.
	if err := pki.WriteFile(file, []byte(spare+"\n")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "recovered", func() bool { return failing.Value() == 0 && logs.Has("can keep the registration again") })
	serves("recovered")
	s.WaitPassing("trimsvc", f.id)

	cancel()
	if err := wait(t, done); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if registered(c, f.id) {
		t.Error("still registered after Run returned")
	}
}

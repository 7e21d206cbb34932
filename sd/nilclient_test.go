package sd_test

import (
	"testing"
	"time"

	"github.com/go-kit/log"

	"github.com/trimkit/trimkit/sd"
)

// TestNilClientsAreErrors: every constructor that takes a Consul client
// refuses a nil one, or an adapter of a nil *api.Client, with an error
// rather than a panic later.
func TestNilClientsAreErrors(t *testing.T) {
	logger := log.NewNopLogger()
	for name, c := range map[string]sd.Client{"nil": nil, "adapter of nil": sd.NewClient(nil)} {
		if _, err := sd.NewInstancer(c, logger, "svc", nil, true); err == nil {
			t.Errorf("NewInstancer(%s): want an error", name)
		}
		if _, err := sd.NewRegistrar(c, sd.Registration{Name: "svc", Address: "127.0.0.1", Port: 1}, logger); err == nil {
			t.Errorf("NewRegistrar(%s): want an error", name)
		}
	}
	for name, c := range map[string]sd.Client{"nil": nil, "adapter of nil": sd.NewClient(nil)} {
		if _, err := sd.NewLoadWatcherOf(c, "svc", sd.CatalogMap{}, logger); err == nil {
			t.Errorf("NewLoadWatcher(%s): want an error", name)
		}
		if _, err := sd.NewLoadReporter(c, "svc", "id", "127.0.0.1:1", "", time.Second, func() (int64, time.Duration, int64) { return 0, 0, 0 }, logger); err == nil {
			t.Errorf("NewLoadReporter(%s): want an error", name)
		}
	}
}

package localconsul

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/internal/ctxtime"
)

// URL is the agent's HTTP API address as a URL: https:// with Security.
func (a *Agent) URL() string {
	if a.opts.Security != nil {
		return "https://" + a.HTTPAddr
	}
	return "http://" + a.HTTPAddr
}

// API returns a Consul API client for the agent; with Security, over TLS
// with the CLI certificate and the management token. It is one client for
// as long as the agent keeps its ports: each new one would bring a
// connection pool of its own, and every poll (Leader, WaitAlive) would
// leave an idle connection open, up to Consul's limit per client address.
func (a *Agent) API() (*api.Client, error) {
	a.apiMu.Lock()
	defer a.apiMu.Unlock()
	if a.apiClient != nil {
		return a.apiClient, nil
	}
	cfg := api.DefaultConfig()
	cfg.Address = a.URL()
	if sec := a.opts.Security; sec != nil {
		cfg.Token = sec.ManagementToken
		cfg.TLSConfig = api.TLSConfig{CAFile: sec.CA.CertFile, CertFile: sec.CLICertFile, KeyFile: sec.CLIKeyFile}
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	a.apiClient = c
	return c, nil
}

// WaitPassing polls c's health API every 20ms until the sorted IDs of the
// passing instances of service satisfy ok, and returns them; when ctx ends
// first, the error says what was passing last.
func WaitPassing(ctx context.Context, c *api.Client, service string, ok func(ids []string) bool) ([]string, error) {
	var (
		ids     []string
		lastErr error
	)
	for {
		entries, _, err := c.Health().Service(service, "", true, (&api.QueryOptions{}).WithContext(ctx))
		if err == nil {
			ids = ids[:0]
			for _, e := range entries {
				ids = append(ids, e.Service.ID)
			}
			slices.Sort(ids)
			if ok(ids) {
				return ids, nil
			}
		}
		lastErr = err
		if !ctxtime.Sleep(ctx, 20*time.Millisecond) {
			return ids, fmt.Errorf("passing instances of %s: have %v (last error %v): %w", service, ids, lastErr, ctx.Err())
		}
	}
}

// Exactly is a WaitPassing condition: the passing instances are ids.
func Exactly(ids ...string) func([]string) bool {
	want := slices.Sorted(slices.Values(ids))
	return func(have []string) bool { return slices.Equal(want, have) }
}

// Count is a WaitPassing condition: n instances pass.
func Count(n int) func([]string) bool {
	return func(have []string) bool { return len(have) == n }
}

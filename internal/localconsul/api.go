package localconsul

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/consul/api"
)

// API returns a Consul API client for the agent.
func (a *Agent) API() (*api.Client, error) {
	cfg := api.DefaultConfig()
	cfg.Address = a.HTTPAddr
	return api.NewClient(cfg)
}

// WaitPassingCount waits, at most timeout, until service has exactly n
// passing instances.
func (a *Agent) WaitPassingCount(ctx context.Context, service string, n int, timeout time.Duration) error {
	c, err := a.API()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		entries, _, err := c.Health().Service(service, "", true, (&api.QueryOptions{}).WithContext(ctx))
		if err == nil && len(entries) == n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d %s instances not passing within %v (have %d, err %v)", n, service, timeout, len(entries), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

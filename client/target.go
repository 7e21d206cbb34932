package client

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/trimkit/trimkit/sd"
)

// consulScheme is the target scheme of DialOptions' ClientConns.
const consulScheme = "consul"

// consulTarget is the Config a consul target says; DialOptions documents
// the target.
func consulTarget(u url.URL) (Config, error) {
	if u.Scheme != consulScheme {
		return Config{}, fmt.Errorf("target %q: scheme %q, want %q", u.String(), u.Scheme, consulScheme)
	}
	cfg := Config{Consul: sd.ConsulConfig{Address: u.Host}, Service: strings.TrimPrefix(u.Path, "/")}
	bad := func(key, value string, err error) error {
		return fmt.Errorf("target %q: %s=%s: %w", u.String(), key, value, err)
	}
	for key, values := range u.Query() {
		for _, v := range values {
			var err error
			switch key {
			case "tag":
				cfg.Tags = append(cfg.Tags, v)
			case "dc":
				cfg.Datacenters = append(cfg.Datacenters, v)
			case "region":
				cfg.Region = v
			case "zone":
				cfg.Zone = v
			case "near":
				cfg.Near = v
			case "overprovisioning":
				cfg.Overprovisioning, err = strconv.ParseFloat(v, 64)
			case "balancer":
				cfg.Balancer = v
			case "discovery":
				cfg.Discovery = v
			case "dns-addr":
				cfg.DNSAddr = v
			case "query":
				cfg.Query = v
			case "subset":
				cfg.Subset, err = strconv.Atoi(v)
			case "subset-caller":
				cfg.SubsetCaller, err = strconv.Atoi(v)
			case "timeout":
				cfg.Retry.Timeout, err = time.ParseDuration(v)
			case "attempts":
				cfg.Retry.MaxAttempts, err = strconv.Atoi(v)
			case "hedge-after":
				cfg.Retry.HedgeAfter, err = time.ParseDuration(v)
			default:
				return Config{}, fmt.Errorf("target %q: unknown parameter %q (see client.DialOptions)", u.String(), key)
			}
			if err != nil {
				return Config{}, bad(key, v, err)
			}
		}
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("target %q: %w", u.String(), err)
	}
	return cfg, nil
}

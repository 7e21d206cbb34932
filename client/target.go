package client

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/trimkit/trimkit/sd"
)

// ConsulScheme is the target scheme of DialOptions' ClientConns.
const ConsulScheme = "consul"

// ConsulTarget is the Config a consul target says, as DialOptions reads
// it:
//
//	consul://[AGENT]/SERVICE[?PARAM=VALUE&...]
//
// AGENT is the Consul agent's host:port; without it, the Consul CLI's
// environment (CONSUL_HTTP_ADDR, its token and TLS variables), else
// 127.0.0.1:8500. The parameters, each the Config field it names:
//
//	tag=T            Tags: instances that carry T (repeat for more)
//	balancer=B       Balancer: round-robin (default), p2c, least-loaded
//	discovery=D      Discovery: consul (default) or dns
//	dns-addr=H:P     DNSAddr, for dns discovery
//	subset=N         Subset; subset-caller=N, SubsetCaller
//	timeout=D        Retry.Timeout, a Go duration (500ms)
//	attempts=N       Retry.MaxAttempts
//	hedge-after=D    Retry.HedgeAfter
//
// An unknown parameter, or a value out of range, is an error.
func ConsulTarget(u url.URL) (Config, error) {
	if u.Scheme != ConsulScheme {
		return Config{}, fmt.Errorf("target %q: scheme %q, want %q", u.String(), u.Scheme, ConsulScheme)
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
			case "balancer":
				cfg.Balancer = v
			case "discovery":
				cfg.Discovery = v
			case "dns-addr":
				cfg.DNSAddr = v
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
				return Config{}, fmt.Errorf("target %q: unknown parameter %q (see client.ConsulTarget)", u.String(), key)
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

package sd

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// newFastClient is a Client over c that reads the health answers itself,
// with cfg, the configuration c was made from (after api.NewClient filled
// it in).
func newFastClient(c *api.Client, cfg *api.Config, addr string) Client {
	if addr == "" {
		addr = cfg.Scheme + "://" + cfg.Address
	}
	a := apiClient{c: c, addr: addr, dc: cfg.Datacenter, transport: cfg.Transport}
	if strings.HasPrefix(cfg.Address, "/") || cfg.HttpClient == nil {
		return a // a unix socket: consul/api knows how to reach it
	}
	a.health = &healthReader{cfg: cfg, uncompressed: loopback(cfg.Address), decoders: map[string]*entryDecoder{}}
	return a
}

// healthReader reads the health API over cfg's HTTP client, as consul/api
// would, and decodes its answers with one entryDecoder per query.
type healthReader struct {
	cfg *api.Config
	// uncompressed asks for answers without gzip: the agent is on loopback,
	// where an answer of a thousand instances costs it and this process
	// more to compress and inflate than to carry.
	uncompressed bool

	mu       sync.Mutex
	decoders map[string]*entryDecoder // by query: service, tags, passing
}

// maxDecoders bounds the decoders a healthReader keeps: one per query
// (service and tags) it has made; beyond, it forgets them all and starts
// again.
const maxDecoders = 256

func (h *healthReader) decoder(key string) *entryDecoder {
	h.mu.Lock()
	defer h.mu.Unlock()
	d, ok := h.decoders[key]
	if !ok {
		if len(h.decoders) >= maxDecoders {
			clear(h.decoders)
		}
		d = newEntryDecoder()
		h.decoders[key] = d
	}
	return d
}

// service queries /v1/health/service/:service as consul/api's
// Health().ServiceMultipleTags does, with the options an Instancer uses.
func (h *healthReader) service(ctx context.Context, headers http.Header, service string, tags []string, passingOnly bool, q *api.QueryOptions) ([]Entry, *api.QueryMeta, error) {
	if err := unsupported(q); err != nil {
		return nil, nil, err
	}
	params := url.Values{}
	for _, p := range []struct{ name, q, cfg string }{
		{"dc", q.Datacenter, h.cfg.Datacenter},
		{"ns", q.Namespace, h.cfg.Namespace},
		{"partition", q.Partition, h.cfg.Partition},
		{"filter", q.Filter, ""},
	} {
		if v := cmp.Or(p.q, p.cfg); v != "" {
			params.Set(p.name, v)
		}
	}
	for _, tag := range tags {
		params.Add("tag", tag)
	}
	if passingOnly {
		params.Set("passing", "1")
	}
	switch {
	case q.RequireConsistent:
		params.Set("consistent", "")
	case q.AllowStale:
		params.Set("stale", "")
	}
	if q.UseCache {
		params.Set("cached", "")
	}
	if q.WaitIndex != 0 {
		params.Set("index", strconv.FormatUint(q.WaitIndex, 10))
	}
	if wait := cmp.Or(q.WaitTime, h.cfg.WaitTime); wait != 0 {
		params.Set("wait", fmt.Sprintf("%dms", wait.Milliseconds()))
	}
	u := url.URL{Scheme: h.cfg.Scheme, Host: h.cfg.Address, Path: h.cfg.PathPrefix + "/v1/health/service/" + service, RawQuery: params.Encode()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, nil, err
	}
	if headers != nil {
		req.Header = headers
	}
	if token := cmp.Or(q.Token, h.cfg.Token); token != "" {
		req.Header.Set("X-Consul-Token", token)
	}
	if h.cfg.HttpAuth != nil {
		req.SetBasicAuth(h.cfg.HttpAuth.Username, h.cfg.HttpAuth.Password)
	}
	if h.uncompressed {
		req.Header.Set("Accept-Encoding", "identity")
	}
	start := time.Now()
	resp, err := h.cfg.HttpClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return nil, nil, api.StatusError{Code: resp.StatusCode, Body: strings.TrimSpace(string(body))}
	}
	meta, err := queryMeta(resp.Header)
	if err != nil {
		return nil, nil, err
	}
	key := service + "\x00" + strings.Join(tags, "\x00") + "\x00" + strconv.FormatBool(passingOnly)
	entries, err := h.decoder(key).read(resp.Body, resp.ContentLength)
	if err != nil {
		return nil, nil, fmt.Errorf("consul's health answer for %s: %w", service, err)
	}
	meta.RequestTime = time.Since(start)
	return entries, meta, nil
}

// unsupported reports the query options the health reader does not send.
func unsupported(q *api.QueryOptions) error {
	var names []string
	for _, o := range []struct {
		name string
		set  bool
	}{
		{"Near", q.Near != ""}, {"NodeMeta", len(q.NodeMeta) > 0}, {"Peer", q.Peer != ""},
		{"SamenessGroup", q.SamenessGroup != ""}, {"MaxAge", q.MaxAge != 0}, {"StaleIfError", q.StaleIfError != 0},
		{"WaitHash", q.WaitHash != ""}, {"Connect", q.Connect}, {"LocalOnly", q.LocalOnly},
		{"RelayFactor", q.RelayFactor != 0}, {"MergeCentralConfig", q.MergeCentralConfig}, {"Global", q.Global},
	} {
		if o.set {
			names = append(names, o.name)
		}
	}
	if len(names) > 0 {
		return fmt.Errorf("sd: health queries do not take the query options %s", strings.Join(names, ", "))
	}
	return nil
}

// queryMeta reads the headers of a query's answer as consul/api does.
func queryMeta(h http.Header) (*api.QueryMeta, error) {
	meta := &api.QueryMeta{
		KnownLeader:           h.Get("X-Consul-KnownLeader") == "true",
		ResultsFilteredByACLs: h.Get("X-Consul-Results-Filtered-By-ACLs") == "true",
		QueryBackend:          h.Get("X-Consul-Query-Backend"),
	}
	index, err := strconv.ParseUint(h.Get("X-Consul-Index"), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("consul's answer has no usable X-Consul-Index: %w", err)
	}
	meta.LastIndex = index
	if v := h.Get("X-Consul-LastContact"); v != "" {
		ms, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("consul's answer has an unusable X-Consul-LastContact: %w", err)
		}
		meta.LastContact = time.Duration(ms) * time.Millisecond
	}
	if v := h.Get("X-Cache"); v != "" {
		meta.CacheHit = strings.EqualFold(v, "HIT")
	}
	if v := h.Get("Age"); v != "" {
		s, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("consul's answer has an unusable Age: %w", err)
		}
		meta.CacheAge = time.Duration(s) * time.Second
	}
	return meta, nil
}

// loopback reports whether addr (host:port, or a host) is on this machine.
func loopback(addr string) bool {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

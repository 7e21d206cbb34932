package bench

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/internal/ctxtime"
	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/internal/localconsul"
	"github.com/trimkit/trimkit/internal/testenv"
)

// BenchmarkConsulRead measures what Consul spends, per change, when 100
// watchers follow a service of 1,000 instances through one client agent,
// for each read mode of /v1/health/service: leader (no consistency
// parameter: Consul's default mode), stale (?stale) and cache (?cached,
// which the agent answers from its streaming backend).
//
// A real cluster runs on loopback: 3 servers and client agent client-1,
// through which the instances are registered (no checks: passing at once)
// and the watchers of those three modes read. Consul 1.20's agent answers
// every blocking health query (index > 0) from its streaming backend when
// use_streaming_backend is on, its default, whatever the consistency mode;
// so one more client agent, client-rpc, runs with use_streaming_backend =
// false, and the modes rpcleader and rpcstale read through it: blocking
// queries that the servers answer. They run last, with one change each
// (the first registers the extra instance through client-rpc, the second
// deregisters it) rather than 10: a change takes seconds to reach their
// watchers.
//
// A watcher is a goroutine, not an sd.Instancer (whose decoding would take
// the CPU Consul needs): a loop of blocking queries (wait=5m) that sends
// "Accept-Encoding: gzip", as a Go client's transport does by default, and
// discards the compressed answer undecoded, keeping X-Consul-Index and when
// it first saw each index. Once every watcher blocks and Consul is idle,
// the benchmark reads each Consul process's CPU (utime+stime,
// /proc/<pid>/stat) over a quiet window, over the changes (one extra
// instance registered, then deregistered, through the watchers' agent, at
// least 1s apart, each once every watcher saw the one before) until every
// watcher saw the last, and, the watchers gone, over a quiet window again.
// Per change, net of the quiet windows' rate, it reports the CPU of the
// leader (as /v1/status/leader names it), of the two followers, of the
// three servers, of the watchers' agent and of this process, with the
// noise of the servers' figure (half the gap between the two quiet
// windows' rates, over as long as the changes took); and the propagation,
// from the register or deregister call's return to each watcher's answer
// with the new index: p50 and max over all watchers and changes. It also
// estimates the agent's gzip share: this process compressing the answer as
// often, with the standard library's gzip at its default level, as
// Consul's HTTP handler does. It fails if a cache answer did not come from
// the streaming backend (X-Consul-Query-Backend) or an answer of
// client-rpc did.
//
// Run with -benchtime 1x; it takes about 3 minutes.
func BenchmarkConsulRead(b *testing.B) {
	const (
		instances = 1000
		watchers  = 100
		changes   = 10
		// rpcChanges is fewer: each wakes 100 blocking queries on the
		// servers and takes seconds to reach every watcher.
		rpcChanges = 1
		gap        = time.Second
	)
	start := time.Now()
	bin := testenv.ConsulBinary(b)
	c := testenv.ClusterWith(b, localconsul.ClusterOptions{Clients: 1})
	streaming := c.Clients[0]
	rpc := noStreamingAgent(b, bin, c)
	streamingAPI, rpcAPI := testenv.API(b, streaming), rpc.API()
	for _, a := range []struct {
		c    *api.Client
		name string
		want bool
	}{{streamingAPI, streaming.Name, true}, {rpcAPI, rpc.Name, false}} {
		if have, err := streamingBackend(a.c); err != nil || have != a.want {
			b.Fatalf("%s: use_streaming_backend %t (%v), want %t", a.name, have, err, a.want)
		}
	}

	addrs := make([]string, instances)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("127.0.0.1:%d", 10000+i)
	}
	registerAll(b, streamingAPI, "read", addrs, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, cl := range []*api.Client{streamingAPI, rpcAPI} {
		if err := waitInstances(ctx, cl, instances); err != nil {
			b.Fatal(err)
		}
	}
	setup := time.Since(start)
	query := streaming.URL() + "/v1/health/service/trimsvc?passing=1"
	plain, err := answer(query, "identity")
	if err != nil {
		b.Fatal(err)
	}
	gzipped, err := answer(query, "gzip")
	if err != nil {
		b.Fatal(err)
	}

	modes := []readMode{
		// Each side of the changes, a quiet window: 4s, where the servers'
		// share is small and background matters; 2s where it is not.
		{name: "leader", agent: streaming, api: streamingAPI, changes: changes, quiet: 4 * time.Second},
		{name: "stale", param: "&stale", agent: streaming, api: streamingAPI, changes: changes, quiet: 4 * time.Second},
		{name: "cache", param: "&cached", agent: streaming, api: streamingAPI, changes: changes, quiet: 4 * time.Second, backend: "streaming"},
		{name: "rpcleader", agent: rpc.Agent, api: rpcAPI, changes: rpcChanges, quiet: 2 * time.Second, backend: "blocking-query"},
		{name: "rpcstale", param: "&stale", agent: rpc.Agent, api: rpcAPI, changes: rpcChanges, quiet: 2 * time.Second, backend: "blocking-query"},
	}
	var (
		results []readResult
		made    int // changes so far: the extra instance is there when odd
	)
	for _, m := range modes {
		r := measureRead(b, c, m, watchers, made, gap)
		results = append(results, r)
		made += m.changes
		if testing.Verbose() {
			b.Logf("%s done at %.0fs: %s", m.name, time.Since(start).Seconds(), r.summary())
		}
		// The agent admits 200 connections from an address
		// (http_max_conns_per_client): the next watchers wait until it
		// has let go of these.
		if err := waitConnsClosed(m.agent, 10); err != nil {
			b.Fatalf("%s: %v", m.name, err)
		}
		p := m.name + "_"
		b.ReportMetric(r.leader+r.followers, p+"servers_cpu_ms")
		b.ReportMetric(r.leader, p+"leader_cpu_ms")
		b.ReportMetric(r.followers, p+"followers_cpu_ms")
		b.ReportMetric(r.agent, p+"agent_cpu_ms")
		b.ReportMetric(r.self, p+"self_cpu_ms")
		b.ReportMetric(r.serversNoise, p+"servers_noise_ms")
		b.ReportMetric(ms(r.p50), p+"prop_p50_ms")
		b.ReportMetric(ms(r.max), p+"prop_max_ms")
		b.ReportMetric(float64(r.leaderChanges), p+"leader_changes")
	}
	gzipCPU, err := gzipCost(plain, watchers)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(instances, "instances")
	b.ReportMetric(watchers, "watchers")
	b.ReportMetric(float64(len(plain))/1000, "answer_kB")
	b.ReportMetric(float64(len(gzipped))/1000, "answer_gzip_kB")
	b.ReportMetric(ms(gzipCPU), "gzip_cpu_ms")
	b.Log(readTable(results, instances, watchers, len(plain), len(gzipped), gzipCPU, setup, time.Since(start)))
}

// readMode is how a benchmark's watchers read.
type readMode struct {
	name  string // the metrics' prefix
	param string // added to the query: "", "&stale" or "&cached"
	agent *localconsul.Agent
	api   *api.Client // the agent's, for the changes
	// backend, when set, is what every answer's X-Consul-Query-Backend
	// must say.
	backend string
	changes int
	quiet   time.Duration // each side of the changes
}

// readResult is what a mode cost, per change.
type readResult struct {
	mode readMode
	// CPU ms per change, net of the quiet rate; the leader's is the
	// leader's before the changes, and the followers' the others'.
	perServer         []float64 // in the cluster's order
	leader, followers float64
	agent, self       float64
	serversNoise      float64 // CPU ms per change
	quietServers      float64 // CPU ms per second, the three together
	quietAgent        float64 // CPU ms per second
	leaderName        string
	serverNames       []string // the cluster's, in its order
	leaderChanges     int      // as /v1/status/leader said after each change
	agentServers      []string // the agent holds connections to them
	p50, max          time.Duration
	answers           float64 // per watcher per change
	backends          map[string]int
	lastContact       int // the largest X-Consul-LastContact, ms
	window            time.Duration
}

// measureRead starts n watchers in mode m, waits until they block and
// Consul is idle, and measures the changes between two quiet windows.
func measureRead(b *testing.B, c *localconsul.Cluster, m readMode, n, made int, gap time.Duration) readResult {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	procs := append(slices.Clone(c.Servers), m.agent)
	if err := waitIdle(ctx, procs); err != nil {
		b.Fatalf("%s: %v", m.name, err)
	}
	encoding := "gzip" // what a Go client's transport sends by default
	g := startWatchers(m.agent.URL()+"/v1/health/service/trimsvc?passing=1&wait=5m"+m.param, n, encoding)
	defer g.stop()
	if errs, err := g.settle(ctx, 500*time.Millisecond); err != nil {
		b.Fatalf("%s: %v", m.name, err)
	} else if errs > 0 {
		b.Logf("%s: %d failed queries before the watchers settled (retried)", m.name, errs)
	}
	if err := waitIdle(ctx, procs); err != nil {
		b.Fatalf("%s: %v", m.name, err)
	}
	leader, err := c.WaitLeader(ctx, nil)
	if err != nil {
		b.Fatalf("%s: %v", m.name, err)
	}
	agentServers, err := serversOf(m.agent.PID(), c.Servers)
	if err != nil {
		b.Fatalf("%s: the agent's servers: %v", m.name, err)
	}

	q0 := sampleCPU(procs)
	if !ctxtime.Sleep(ctx, m.quiet) {
		b.Fatalf("%s: %v", m.name, ctx.Err())
	}
	q1 := sampleCPU(procs)
	answersBefore := g.answerCount()
	props, leaders, err := churnRead(ctx, c, m.api, g, made, m.changes, gap)
	c1 := sampleCPU(procs)
	if err != nil {
		b.Fatalf("%s: %v", m.name, err)
	}
	answers := g.answerCount() - answersBefore
	if err := waitIdle(ctx, procs); err != nil {
		b.Fatalf("%s: %v", m.name, err)
	}
	q2 := sampleCPU(procs)
	if !ctxtime.Sleep(ctx, m.quiet) {
		b.Fatalf("%s: %v", m.name, ctx.Err())
	}
	q3 := sampleCPU(procs)
	g.stop()

	r := readResult{mode: m, leaderName: leader.Name, agentServers: agentServers, window: c1.at.Sub(q1.at),
		answers: float64(answers) / float64(n) / float64(m.changes)}
	cost := netCPU(q0, q1, c1, q2, q3, m.changes)
	for i, s := range c.Servers {
		r.perServer = append(r.perServer, cost.cpu[i])
		r.serverNames = append(r.serverNames, s.Name)
		r.quietServers += cost.quiet[i]
		r.serversNoise += cost.noise[i]
		if s == leader {
			r.leader = cost.cpu[i]
		} else {
			r.followers += cost.cpu[i]
		}
	}
	r.agent, r.quietAgent, r.self = cost.cpu[len(c.Servers)], cost.quiet[len(c.Servers)], cost.self
	props = sorted(props)
	r.p50, r.max = loadgen.Percentile(props, 50), props[len(props)-1]
	for _, l := range leaders {
		if l != leader {
			r.leaderChanges++
			leader = l
		}
	}
	if r.leaderChanges > 0 && testing.Verbose() {
		b.Logf("%s: the leader changed %d times during the changes; the leader's CPU is %s's", m.name, r.leaderChanges, r.leaderName)
	}

	g.mu.Lock()
	defer g.mu.Unlock()
	r.backends, r.lastContact = g.backends, g.lastContact
	if g.errs > 0 {
		b.Errorf("%s: %d failed queries, the last: %v", m.name, g.errs, g.lastErr)
	}
	if m.backend != "" && g.backends[m.backend] != g.answers {
		b.Errorf("%s: answers by X-Consul-Query-Backend %v, want all %d %q", m.name, g.backends, g.answers, m.backend)
	}
	return r
}

// churnRead makes changes through c, alternately registering and
// deregistering one extra instance (made changes before these: it is
// registered when made is odd), each at least gap after the one before and
// once every watcher saw it. The watchers end once they saw the last: an
// agent asks the servers with a context of its own, and a blocking query
// whose caller has gone stays on the servers until a change answers it,
// which would be counted against the next mode. It returns, for each
// change and watcher, how long after the call returned the watcher saw a
// newer index, and the leader after each change.
func churnRead(ctx context.Context, cl *localconsul.Cluster, c *api.Client, g *watchGroup, made, changes int, gap time.Duration) ([]time.Duration, []*localconsul.Agent, error) {
	var (
		props   []time.Duration
		leaders []*localconsul.Agent
		last    time.Time
	)
	for k := range changes {
		if !ctxtime.Sleep(ctx, time.Until(last.Add(gap))) {
			return nil, nil, ctx.Err()
		}
		before := g.maxIndex()
		if k == changes-1 {
			g.stopPast.Store(before)
		}
		var err error
		if (made+k)%2 == 0 {
			err = registerErr(c, "read-extra", "127.0.0.1:19999", false)
		} else {
			err = c.Agent().ServiceDeregister("read-extra")
		}
		last = time.Now()
		if err != nil {
			return nil, nil, fmt.Errorf("change %d: %w", k+1, err)
		}
		seen, err := g.waitPast(ctx, before)
		if err != nil {
			return nil, nil, fmt.Errorf("change %d: %w", k+1, err)
		}
		for _, at := range seen {
			props = append(props, max(at.Sub(last), 0))
		}
		leader, err := cl.WaitLeader(ctx, nil)
		if err != nil {
			return nil, nil, err
		}
		leaders = append(leaders, leader)
	}
	return props, leaders, nil
}

// waitIdle waits until procs together have used less than 30% of a core
// over each of two half seconds in a row: no answer is still being
// computed, encoded or sent. Idle, the three servers and an agent use
// about 15%.
func waitIdle(ctx context.Context, procs []*localconsul.Agent) error {
	const window, busy = 500 * time.Millisecond, 150 * time.Millisecond
	prev, calm := sampleCPU(procs), 0
	for calm < 2 {
		if !ctxtime.Sleep(ctx, window) {
			return fmt.Errorf("consul not idle: %w", ctx.Err())
		}
		now := sampleCPU(procs)
		var used time.Duration
		for i := range now.cpu {
			used += now.cpu[i] - prev.cpu[i]
		}
		if used < busy {
			calm++
		} else {
			calm = 0
		}
		prev = now
	}
	return nil
}

// watchGroup is watchers, each a loop of blocking queries.
type watchGroup struct {
	n      int
	cancel context.CancelFunc
	wg     sync.WaitGroup
	tr     *http.Transport
	// stopPast, once set, ends each watcher when it sees an index past
	// it.
	stopPast atomic.Uint64

	mu          sync.Mutex
	seen        [][]sighting   // per watcher, each index when first seen
	answers     int            // 200 OK
	backends    map[string]int // answers by X-Consul-Query-Backend
	lastContact int            // the largest X-Consul-LastContact, ms
	lastAnswer  time.Time
	errs        int
	lastErr     error
}

// sighting is when a watcher first saw an index.
type sighting struct {
	index uint64
	at    time.Time
}

// startWatchers starts n watchers of url (a query ending in its
// parameters), sending encoding as Accept-Encoding.
func startWatchers(url string, n int, encoding string) *watchGroup {
	ctx, cancel := context.WithCancel(context.Background())
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = n // a connection each, kept between queries
	g := &watchGroup{n: n, cancel: cancel, tr: tr, seen: make([][]sighting, n), backends: map[string]int{}}
	client := &http.Client{Transport: tr}
	for i := range n {
		g.wg.Add(1)
		go g.watch(ctx, client, i, url, encoding)
	}
	return g
}

// watch is watcher i's loop.
func (g *watchGroup) watch(ctx context.Context, client *http.Client, i int, url, encoding string) {
	defer g.wg.Done()
	var index uint64
	for ctx.Err() == nil {
		next, err := g.query(ctx, client, i, fmt.Sprintf("%s&index=%d", url, index), encoding)
		if err != nil {
			if ctx.Err() == nil {
				g.fail(err)
				ctxtime.Sleep(ctx, 100*time.Millisecond)
			}
			continue
		}
		if p := g.stopPast.Load(); p != 0 && next > p {
			return
		}
		index = next
	}
}

// query asks once. Accept-Encoding set here, not by the transport, makes
// the transport hand the body on as it came, compressed: it is read and
// discarded, not decoded.
func (g *watchGroup) query(ctx context.Context, client *http.Client, i int, url, encoding string) (uint64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept-Encoding", encoding)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	at := time.Now()
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: %s", url, resp.Status)
	}
	index, err := strconv.ParseUint(resp.Header.Get("X-Consul-Index"), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("X-Consul-Index: %w", err)
	}
	lastContact, _ := strconv.Atoi(resp.Header.Get("X-Consul-LastContact"))

	g.mu.Lock()
	defer g.mu.Unlock()
	g.answers++
	g.backends[resp.Header.Get("X-Consul-Query-Backend")]++
	g.lastContact = max(g.lastContact, lastContact)
	g.lastAnswer = at
	if s := g.seen[i]; len(s) == 0 || s[len(s)-1].index != index {
		g.seen[i] = append(s, sighting{index, at})
	}
	return index, nil
}

func (g *watchGroup) fail(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.errs++
	g.lastErr = err
}

func (g *watchGroup) answerCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.answers
}

// stop ends the watchers and waits for them; it may be called again.
func (g *watchGroup) stop() {
	g.cancel()
	g.wg.Wait()
	g.tr.CloseIdleConnections()
}

// settle waits until every watcher has had its first answer and no answer
// came for still: they all block. Failed queries, retried, are forgiven
// (a leader election under the first answers' load, the agent letting go
// of the last watchers' connections) and counted: it returns how many.
func (g *watchGroup) settle(ctx context.Context, still time.Duration) (int, error) {
	for {
		g.mu.Lock()
		ok := time.Since(g.lastAnswer) >= still && !slices.ContainsFunc(g.seen, func(s []sighting) bool { return len(s) == 0 })
		errs, lastErr := g.errs, g.lastErr
		if ok {
			g.errs, g.lastErr = 0, nil
		}
		g.mu.Unlock()
		if ok {
			return errs, nil
		}
		if !ctxtime.Sleep(ctx, 50*time.Millisecond) {
			return errs, fmt.Errorf("watchers not settled (%d failed queries, the last: %v): %w", errs, lastErr, ctx.Err())
		}
	}
}

// maxIndex is the largest index a watcher saw.
func (g *watchGroup) maxIndex() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	var m uint64
	for _, s := range g.seen {
		for _, x := range s {
			m = max(m, x.index)
		}
	}
	return m
}

// waitPast waits until every watcher has seen an index past index, and
// returns when each first did.
func (g *watchGroup) waitPast(ctx context.Context, index uint64) ([]time.Time, error) {
	for {
		g.mu.Lock()
		var at []time.Time
		for _, s := range g.seen {
			if i := slices.IndexFunc(s, func(x sighting) bool { return x.index > index }); i >= 0 {
				at = append(at, s[i].at)
			}
		}
		g.mu.Unlock()
		if len(at) == g.n {
			return at, nil
		}
		if !ctxtime.Sleep(ctx, 2*time.Millisecond) {
			return nil, fmt.Errorf("%d of %d watchers saw an index past %d: %w", len(at), g.n, index, ctx.Err())
		}
	}
}

// cpuSample is the CPU time agents' processes, and this one, have used.
type cpuSample struct {
	at   time.Time
	cpu  []time.Duration
	self time.Duration
}

func sampleCPU(agents []*localconsul.Agent) cpuSample {
	s := cpuSample{at: time.Now(), self: cpuTime()}
	for _, a := range agents {
		s.cpu = append(s.cpu, cpuOf(a))
	}
	return s
}

// netCost is, per process, CPU ms per change net of the quiet rate, the
// quiet rate in ms per second, and the noise of the first: how far apart
// the two quiet windows' rates were, half of it over as long as the
// changes took, per change.
type netCost struct {
	cpu, quiet, noise []float64
	self              float64
}

// netCPU is the CPU between c0 and c1 per change, less the rate over the
// quiet windows q0-c0 and q2-q3 over as long.
func netCPU(q0, c0, c1, q2, q3 cpuSample, changes int) netCost {
	before, after, window := c0.at.Sub(q0.at).Seconds(), q3.at.Sub(q2.at).Seconds(), c1.at.Sub(c0.at).Seconds()
	per := func(q0, c0, c1, q2, q3 time.Duration) (cpu, rate, noise float64) {
		rate = ms(c0-q0+q3-q2) / (before + after)
		gap := ms(c0-q0)/before - ms(q3-q2)/after
		return (ms(c1-c0) - rate*window) / float64(changes), rate, max(gap, -gap) / 2 * window / float64(changes)
	}
	var n netCost
	for i := range q0.cpu {
		cpu, rate, noise := per(q0.cpu[i], c0.cpu[i], c1.cpu[i], q2.cpu[i], q3.cpu[i])
		n.cpu, n.quiet, n.noise = append(n.cpu, cpu), append(n.quiet, rate), append(n.noise, noise)
	}
	n.self, _, _ = per(q0.self, c0.self, c1.self, q2.self, q3.self)
	return n
}

// gzipCost is the CPU this process takes to compress body n times with
// compress/gzip at its default level, as Consul's HTTP handler does
// (github.com/NYTimes/gziphandler).
func gzipCost(body []byte, n int) (time.Duration, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	start := cpuTime()
	for range n {
		buf.Reset()
		zw.Reset(&buf)
		if _, err := zw.Write(body); err != nil {
			return 0, err
		}
		if err := zw.Close(); err != nil {
			return 0, err
		}
	}
	return cpuTime() - start, nil
}

// noStreamingAgent starts one more client agent, client-rpc, in c, with
// use_streaming_backend = false: it answers blocking health queries with
// blocking queries on the servers, in the mode asked for. It joins with
// the cluster's gossip key, read from a server's configuration (a Cluster
// keeps it to itself).
func noStreamingAgent(b *testing.B, bin string, c *localconsul.Cluster) *testenv.Agent {
	b.Helper()
	cfg, err := os.ReadFile(filepath.Join(filepath.Dir(c.Servers[0].LogPath), "agent.hcl"))
	if err != nil {
		b.Fatal(err)
	}
	key := regexp.MustCompile(`(?m)^encrypt = "([^"]+)"$`).FindSubmatch(cfg)
	if key == nil {
		b.Fatalf("no gossip key in %s's configuration", c.Servers[0].Name)
	}
	var join []string
	for _, s := range c.Servers {
		join = append(join, s.SerfLANAddr)
	}
	dir := b.TempDir()
	confDir := filepath.Join(dir, "config")
	if err := os.Mkdir(confDir, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(confDir, "streaming.hcl"), []byte("use_streaming_backend = false\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	a, err := localconsul.New(bin, filepath.Join(dir, "client-rpc"), localconsul.Options{
		ConfigDir: confDir,
		Member:    &localconsul.Member{Name: "client-rpc", RetryJoin: join, Encrypt: string(key[1])},
	})
	if err != nil {
		b.Fatal(err)
	}
	return testenv.Adopt(b, a)
}

// waitInstances waits until c's agent lists n passing instances of
// trimsvc. It asks every 500ms: each answer is the whole list, and asking
// as often as localconsul.WaitPassing does (every 20ms) while the agent
// syncs the instances has kept the leader from its heartbeats on 2 cores.
func waitInstances(ctx context.Context, c *api.Client, n int) error {
	for {
		entries, _, err := c.Health().Service("trimsvc", "", true, (&api.QueryOptions{}).WithContext(ctx))
		if err == nil && len(entries) == n {
			return nil
		}
		if !ctxtime.Sleep(ctx, 500*time.Millisecond) {
			return fmt.Errorf("want %d passing instances, have %d (last error %v): %w", n, len(entries), err, ctx.Err())
		}
	}
}

// streamingBackend reports the agent's use_streaming_backend.
func streamingBackend(c *api.Client) (bool, error) {
	self, err := c.Agent().Self()
	if err != nil {
		return false, err
	}
	on, ok := self["DebugConfig"]["UseStreamingBackend"].(bool)
	if !ok {
		return false, errors.New("no UseStreamingBackend in /v1/agent/self")
	}
	return on, nil
}

// answer is url's answer as sent with Accept-Encoding encoding.
func answer(url, encoding string) ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept-Encoding", encoding)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// serversOf names the servers that process pid, a client agent, holds
// established TCP connections to on their server port, where it sends its
// RPCs and its streaming subscriptions. An agent keeps connections it no
// longer uses for a while: the one it uses is among them.
func serversOf(pid int, servers []*localconsul.Agent) ([]string, error) {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, err
	}
	sockets := map[string]bool{} // inodes
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if inode, ok := strings.CutPrefix(l, "socket:["); err == nil && ok {
			sockets[strings.TrimSuffix(inode, "]")] = true
		}
	}
	byPort := map[string]string{}
	for _, s := range servers {
		port, err := hexPort(s.ServerAddr)
		if err != nil {
			return nil, err
		}
		byPort[port] = s.Name
	}
	var names []string
	for _, f := range tcpConns() {
		_, port, _ := strings.Cut(f.remote, ":")
		if name, ok := byPort[port]; ok && sockets[f.inode] && !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names, nil
}

// waitConnsClosed waits, at most 30s, until fewer than n TCP connections
// to a's HTTP port are established.
func waitConnsClosed(a *localconsul.Agent, n int) error {
	port, err := hexPort(a.HTTPAddr)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		open := 0
		for _, c := range tcpConns() {
			if strings.HasSuffix(c.local, ":"+port) {
				open++
			}
		}
		if open < n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d connections to %s still open", open, a.Name)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tcpConn is an established IPv4 TCP connection as /proc/net/tcp lists it:
// addresses as hex ip:port, and the socket's inode.
type tcpConn struct{ local, remote, inode string }

func tcpConns() []tcpConn {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return nil
	}
	var conns []tcpConn
	for _, line := range strings.Split(string(b), "\n")[1:] {
		// sl local_address rem_address st ... inode; st 01 is established.
		f := strings.Fields(line)
		if len(f) >= 10 && f[3] == "01" {
			conns = append(conns, tcpConn{f[1], f[2], f[9]})
		}
	}
	return conns
}

// hexPort is addr's port as /proc/net/tcp writes it.
func hexPort(addr string) (string, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%04X", p), nil
}

// answeredBy names the server that spent the most CPU per change, and
// its role, or is "-" when no server spent more than the servers' noise.
func (r readResult) answeredBy() string {
	i := 0
	for j, cpu := range r.perServer {
		if cpu > r.perServer[i] {
			i = j
		}
	}
	switch {
	case r.perServer[i] <= 2*r.serversNoise:
		return "-"
	case r.serverNames[i] == r.leaderName:
		return r.serverNames[i] + " (leader)"
	}
	return r.serverNames[i] + " (follower)"
}

// summary is r on one line.
func (r readResult) summary() string {
	return fmt.Sprintf("CPU ms per change: servers %.1f ±%.1f (leader %s %.1f, followers %.1f), agent %.1f, self %.1f; propagation p50 %.0fms max %.0fms",
		r.leader+r.followers, r.serversNoise, r.leaderName, r.leader, r.followers, r.agent, r.self, ms(r.p50), ms(r.max))
}

// readTable lays the results out for a reader, in fewer than 10 lines: the
// testing package cuts a benchmark's log there.
func readTable(results []readResult, instances, watchers, plain, gzipped int, gzipCPU, setup, total time.Duration) string {
	var s strings.Builder
	fmt.Fprintf(&s, "%d watchers of %d instances; an answer is %.0f kB, %.0f kB gzipped (gzip of %d answers, as the agent does it: %.0f ms CPU here); setup %.0fs, all %.0fs\n",
		watchers, instances, float64(plain)/1000, float64(gzipped)/1000, watchers, ms(gzipCPU), setup.Seconds(), total.Seconds())
	s.WriteString("CPU: ms per change, net of the quiet rate (srv/agent ms/s), ± the servers' noise; per server in the cluster's order, * the leader; prop: from the call's return to each watcher's new index\n")
	w := tabwriter.NewWriter(&s, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "mode\tvia\tchg\tservers\t±\tleader\tfollowers\tagent\tself\tprop p50\tprop max\tper server\tmost CPU\tagent's conns\tquiet\tans/chg\tlastcontact\tleader chg\tX-Consul-Query-Backend")
	for _, r := range results {
		var per []string
		for i, name := range r.serverNames {
			star := ""
			if name == r.leaderName {
				star = "*"
			}
			per = append(per, fmt.Sprintf("%.0f%s", r.perServer[i], star))
		}
		var backends []string
		for _, k := range slices.Sorted(maps.Keys(r.backends)) {
			backends = append(backends, fmt.Sprintf("%s:%d", cmp.Or(k, "none"), r.backends[k]))
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.0f\t%.0f\t%.0fms\t%.0fms\t%s\t%s\t%s\t%.0f/%.0f\t%.2f\t%dms\t%d\t%s\n",
			r.mode.name, r.mode.agent.Name, r.mode.changes, r.leader+r.followers, r.serversNoise, r.leader, r.followers, r.agent, r.self,
			ms(r.p50), ms(r.max), strings.Join(per, "/"), r.answeredBy(), strings.Join(r.agentServers, ","),
			r.quietServers, r.quietAgent, r.answers, r.lastContact, r.leaderChanges, strings.Join(backends, " "))
	}
	w.Flush()
	return strings.TrimSuffix(s.String(), "\n")
}

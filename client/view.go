package client

import (
	"encoding/json"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/connectivity"

	"github.com/trimkit/trimkit/sd"
)

// views are the process's Endpointers, both faces', for Handler: each
// joins when it is built and leaves when it closes. Like the process's
// shared Consul watches (instancers), they are the process's: a status
// page is about the whole process, as expvar's and net/http/pprof's are.
var views viewRegistry

type viewRegistry struct {
	mu  sync.Mutex
	all []*Endpointer // in the order they joined, for a stable page
}

func (r *viewRegistry) add(e *Endpointer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all = append(r.all, e)
}

func (r *viewRegistry) remove(e *Endpointer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all = slices.DeleteFunc(r.all, func(x *Endpointer) bool { return x == e })
}

// endpointers are the registered Endpointers in the order they joined.
func (r *viewRegistry) endpointers() []*Endpointer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.all)
}

// viewInfo is what the page says of an Endpointer besides its instances;
// New and NewConn set it (endpointerOptions.view).
type viewInfo struct {
	service  string
	tags     []string
	balancer string
	face     string // faceEndpoint or faceConn
	// watch is the discovery that feeds the Endpointer; when it marshals
	// to JSON (an sd.Instancer does), that is the watch's state.
	watch any
}

const (
	faceEndpoint = "go-kit endpoint"
	faceConn     = "grpc.ClientConn"
)

// historyLen is how many seconds of attempts and failures per instance the
// page charts: 3 minutes, about 1.4 KB an instance.
const historyLen = 180

// history is the attempts and failures of each instance, per second, over
// the last historyLen seconds; the Endpointer's sampler fills it from its
// nodes' totals, so that the call path pays nothing for it.
type history struct {
	mu    sync.Mutex
	ticks int64 // samples taken
	per   map[*Node]*series
}

type series struct {
	born     int64 // the tick of its first sample
	seen     int64 // the tick of its last
	last     tally
	ok, fail [historyLen]uint32 // ring, by tick
}

// sample records one second of nodes' attempts, and forgets the nodes no
// longer listed.
func (h *history) sample(nodes []*Node) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.per == nil {
		h.per = map[*Node]*series{}
	}
	h.ticks++
	i := h.ticks % historyLen
	for _, n := range nodes {
		c := n.count()
		s := h.per[n]
		if s == nil {
			s = &series{born: h.ticks, last: c}
			h.per[n] = s
		}
		s.ok[i], s.fail[i] = clampU32(c.ok-s.last.ok), clampU32(c.fail-s.last.fail)
		s.last, s.seen = c, h.ticks
	}
	maps.DeleteFunc(h.per, func(_ *Node, s *series) bool { return s.seen != h.ticks })
}

func clampU32(v int64) uint32 { return uint32(min(max(v, 0), math.MaxUint32)) }

// rates are n's attempts (answered and failed) and failures per second,
// oldest first, over the seconds sampled since it was first seen, at most
// historyLen.
func (h *history) rates(n *Node) (attempts, failures []float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.per[n]
	if s == nil {
		return nil, nil
	}
	// The first sample of a series is its baseline, not a second's count.
	k := min(h.ticks-s.born, historyLen-1)
	attempts, failures = make([]float64, 0, k), make([]float64, 0, k)
	for t := h.ticks - k + 1; t <= h.ticks; t++ {
		i := t % historyLen
		attempts = append(attempts, float64(s.ok[i])+float64(s.fail[i]))
		failures = append(failures, float64(s.fail[i]))
	}
	return attempts, failures
}

// sampleEvery samples the Endpointer's instances for its history every
// period until it closes.
func (e *Endpointer) sampleEvery(period time.Duration) {
	defer e.wg.Done()
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-t.C:
			e.history.sample(e.snapshot().nodes)
		}
	}
}

// The page's JSON: what Handler serves with Accept: application/json.
type (
	pageJSON struct {
		Time    time.Time    `json:"time"`
		Clients []clientJSON `json:"clients"`
	}
	clientJSON struct {
		Service  string   `json:"service"`
		Tags     []string `json:"tags,omitempty"`
		Face     string   `json:"face"`
		Balancer string   `json:"balancer"`
		// Watch is the discovery's state (an sd.Instancer's JSON): the
		// last index, the last error, whether its answer is stale.
		Watch  json.RawMessage `json:"watch,omitempty"`
		Subset *subsetJSON     `json:"subset,omitempty"`
		// Datacenters are its bands, with several (Config.Datacenters),
		// in order: each with its share of first attempts, its health
		// and its own watch (Watch is then empty).
		Datacenters []datacenterJSON `json:"datacenters,omitempty"`
		// SecondsCharted is how many seconds each instance's per-second
		// rates cover at most.
		SecondsCharted int            `json:"seconds_charted"`
		Instances      []instanceJSON `json:"instances"`
	}
	datacenterJSON struct {
		Name string `json:"name"`
		// Share is its share of first attempts, Health min(1,
		// overprovisioning × healthy/instances).
		Share     float64         `json:"share"`
		Health    float64         `json:"health"`
		Healthy   float64         `json:"healthy"`
		Instances int             `json:"instances"`
		Watch     json.RawMessage `json:"watch,omitempty"`
	}
	subsetJSON struct {
		Size    int `json:"size"`
		Listed  int `json:"listed"`
		Members int `json:"members"`
	}
	instanceJSON struct {
		Addr       string `json:"addr"`
		Datacenter string `json:"datacenter,omitempty"` // with several
		// Tier is where the balancers take it from: ready, connecting,
		// held (fail-static), failing, ejected, or not_in_subset.
		Tier         string     `json:"tier"`
		Conn         string     `json:"conn,omitempty"` // its connection's state: READY, CONNECTING...
		SubsetMember bool       `json:"subset_member"`
		Probation    bool       `json:"probation,omitempty"`
		Ejected      bool       `json:"ejected,omitempty"`
		NextProbe    *time.Time `json:"next_probe,omitempty"` // while ejected
		Held         bool       `json:"held,omitempty"`
		HeldUntil    *time.Time `json:"held_until,omitempty"`
		// LatencyMS is the peak-EWMA latency estimate (0 before its first
		// answer); InFlight its attempts in flight, Streams its open
		// streams (a ClientConn's).
		LatencyMS float64   `json:"latency_ms"`
		InFlight  int64     `json:"in_flight"`
		Streams   int64     `json:"streams"`
		Load      *loadJSON `json:"load,omitempty"`
		// Attempts and Failures are totals since it was first listed;
		// the rates are per second, oldest first.
		Attempts          int64     `json:"attempts"`
		Failures          int64     `json:"failures"`
		AttemptsPerSecond []float64 `json:"attempts_per_second"`
		FailuresPerSecond []float64 `json:"failures_per_second"`
	}
	loadJSON struct {
		Utilization float64 `json:"utilization"`
		Limit       float64 `json:"limit"`
		AgeMS       float64 `json:"age_ms"`
	}
)

var tierNames = [tiers]string{tierReady: "ready", tierConnecting: "connecting", tierHeld: "held", tierFailing: "failing", tierEjected: "ejected"}

// tierNotInSubset is the tier of a listed instance outside the subset:
// the Endpointer holds no node for it.
const tierNotInSubset = "not_in_subset"

// view is every registered Endpointer's view now.
func (r *viewRegistry) view(now time.Time) pageJSON {
	p := pageJSON{Time: now, Clients: []clientJSON{}}
	for _, e := range r.endpointers() {
		p.Clients = append(p.Clients, e.view(now))
	}
	return p
}

// view is what e knows of its instances now.
func (e *Endpointer) view(now time.Time) clientJSON {
	c := clientJSON{Service: e.info.service, Tags: e.info.tags, Face: e.info.face, Balancer: e.info.balancer,
		SecondsCharted: historyLen - 1, Instances: []instanceJSON{}}
	if src, ok := e.info.watch.(*dcSource); ok {
		marshalled := map[*sd.Instancer]json.RawMessage{} // a datacenter's tiers share its watch
		for _, w := range src.bandWatches() {
			b, ok := marshalled[w]
			if !ok {
				b, _ = w.MarshalJSON()
				marshalled[w] = b
			}
			c.Datacenters = append(c.Datacenters, datacenterJSON{Watch: b})
		}
	} else if m, ok := e.info.watch.(json.Marshaler); ok {
		if b, err := m.MarshalJSON(); err == nil {
			c.Watch = b
		}
	}
	epoch := e.epoch
	e.mu.Lock()
	snap := e.snapshot() // published under e.mu: consistent with the nodes' ejection state
	tierOf := map[*Node]int{}
	for t, nodes := range snap.tiers {
		for _, n := range nodes {
			tierOf[n] = t
		}
	}
	for _, n := range snap.nodes {
		in := instanceJSON{
			Addr: n.instance, Tier: tierNames[tierOf[n]], Conn: connectivity.State(n.state.Load()).String(),
			SubsetMember: true, Probation: n.probation.Load(), Ejected: n.ejected, Held: n.held.Load(),
			LatencyMS: math.Float64frombits(n.ewma.Load()) / 1e6, InFlight: n.inflight.Load(), Streams: n.streams.Load(),
		}
		if n.ejected {
			at := n.probeAt
			in.NextProbe = &at
		}
		if in.Held {
			until := n.heldUntil
			in.HeldUntil = &until
		}
		if stamp := n.loadStamp.Load(); stamp != 0 {
			in.Load = &loadJSON{Utilization: math.Float64frombits(n.load.Load()), Limit: math.Float64frombits(n.loadLimit.Load()),
				AgeMS: float64(now.Sub(epoch.Add(time.Duration(stamp)))) / 1e6}
		}
		t := n.count()
		in.Attempts, in.Failures = t.total(), t.fail
		if band := int(n.band.Load()); snap.bands != nil && band < len(e.bands.names) {
			in.Datacenter = e.bands.names[band]
		}
		c.Instances = append(c.Instances, in)
	}
	if bs := snap.bands; bs != nil {
		for i, name := range e.bands.names {
			if i >= len(c.Datacenters) {
				c.Datacenters = append(c.Datacenters, datacenterJSON{})
			}
			d := &c.Datacenters[i]
			d.Name, d.Share, d.Healthy, d.Instances = name, bs.load[i], bs.healthy[i], bs.total[i]
			d.Health = bandHealth(bs.healthy[i], bs.total[i], e.bands.over)
		}
	}
	if e.subset.size > 0 {
		c.Subset = &subsetJSON{Size: e.subset.size, Listed: len(e.subset.listed), Members: len(e.subset.members)}
		for _, inst := range e.subset.listed {
			if _, member := slices.BinarySearch(e.subset.members, inst); !member {
				c.Instances = append(c.Instances, instanceJSON{Addr: inst, Tier: tierNotInSubset})
			}
		}
	}
	e.mu.Unlock()
	for i, n := range snap.nodes {
		c.Instances[i].AttemptsPerSecond, c.Instances[i].FailuresPerSecond = e.history.rates(n)
	}
	return c
}

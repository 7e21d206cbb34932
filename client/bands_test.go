package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
)

func TestBandLoads(t *testing.T) {
	for _, c := range []struct {
		name    string
		healthy []float64
		total   []int
		want    []float64
	}{
		{"all healthy", []float64{3, 3}, []int{3, 3}, []float64{1, 0}},
		{"one of three down: 2/3 × 1.4 ≥ 1 would be 0.93", []float64{2, 3}, []int{3, 3}, []float64{2.0 / 3 * 1.4, 1 - 2.0/3*1.4}},
		{"two of three down", []float64{1, 3}, []int{3, 3}, []float64{1.4 / 3, 1 - 1.4/3}},
		{"none left", []float64{0, 3}, []int{3, 3}, []float64{0, 1}},
		{"none left, the next weak too: all go where health is", []float64{0, 1}, []int{3, 3}, []float64{0, 1}},
		{"both weak: by health", []float64{1, 1}, []int{3, 3}, []float64{0.5, 0.5}},
		{"both weak, unequal", []float64{1, 2}, []int{5, 5}, []float64{1.0 / 3, 2.0 / 3}},
		{"nothing healthy anywhere: the first", []float64{0, 0}, []int{3, 3}, []float64{1, 0}},
		{"the first has none registered", []float64{0, 3}, []int{0, 3}, []float64{0, 1}},
		{"three bands, cascading", []float64{1, 1, 3}, []int{3, 3, 3}, []float64{1.4 / 3, 1.4 / 3, 1 - 2.8/3}},
		{"a ramping instance counts in part", []float64{1.5, 3}, []int{3, 3}, []float64{0.7, 0.3}},
		{"at 1/1.4 exactly, no spill", []float64{5, 7}, []int{7, 7}, []float64{1, 0}},
	} {
		t.Run(c.name, func(t *testing.T) {
			load := make([]float64, len(c.healthy))
			bandLoads(c.healthy, c.total, defaultOverprovisioning, load)
			sum := 0.0
			for i := range load {
				sum += load[i]
				if math.Abs(load[i]-c.want[i]) > 1e-9 {
					t.Errorf("loads: want %.4f, have %.4f", c.want, load)
					break
				}
			}
			if math.Abs(sum-1) > 1e-9 {
				t.Errorf("loads add up to %v, want 1", sum)
			}
		})
	}
}

// bandRig is an Endpointer over a banded source of two bands, "a0".. in
// band 0 and "b0".. in band 1, with fake endpoints that answer their
// instance's name.
type bandRig struct {
	src *fakeBands
	e   *Endpointer
}

type fakeBands struct {
	mu    sync.Mutex
	state []bandState
	subs  []chan<- bandUpdate
}

func (f *fakeBands) registerBands(ch chan<- bandUpdate) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subs = append(f.subs, ch)
	ch <- slices.Clone(f.state)
	return len(f.state)
}

func (f *fakeBands) deregisterBands(chan<- bandUpdate) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subs = nil
}

func (f *fakeBands) Register(chan<- kitsd.Event)   {}
func (f *fakeBands) Deregister(chan<- kitsd.Event) {}
func (f *fakeBands) Stop()                         {}

// send passes the states on as the Endpointer's receive would, together,
// and returns once it has applied them.
func (r *bandRig) send(u ...bandState) {
	r.src.mu.Lock()
	for _, st := range u {
		r.src.state[st.band] = st
	}
	r.src.mu.Unlock()
	r.e.handleBand(u)
}

func names(prefix string, n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

func newBandRig(t *testing.T, band0, band1 []string, registered0 int) *bandRig {
	t.Helper()
	src := &fakeBands{state: []bandState{
		{band: 0, instances: band0, registered: registered0},
		{band: 1, instances: band1, registered: len(band1)},
	}}
	o, err := EndpointerConfig{Ejection: Ejection{Disabled: true}}.options()
	if err != nil {
		t.Fatal(err)
	}
	o.bandNames, o.overprovisioning = []string{"dc1", "dc2"}, defaultOverprovisioning
	factory := func(inst string) (endpoint.Endpoint, io.Closer, error) {
		return func(context.Context, any) (any, error) { return inst, nil }, nil, nil
	}
	e := newEndpointer(src, factory, log.NewNopLogger(), o)
	t.Cleanup(func() { e.Close() })
	return &bandRig{src: src, e: e}
}

// shares picks n first attempts and returns the share of each band.
func (r *bandRig) shares(t *testing.T, n int) [2]float64 {
	t.Helper()
	b := NewRoundRobin(r.e)
	var count [2]int
	for range n {
		nd, err := b.Pick(nil)
		if err != nil {
			t.Fatal(err)
		}
		count[nd.band.Load()]++
	}
	return [2]float64{float64(count[0]) / float64(n), float64(count[1]) / float64(n)}
}

func TestBandsSpillTheShortfall(t *testing.T) {
	// dc1 has 3 registered, 1 listed (two crashed, critical): 1/3 × 1.4 =
	// 0.47 of calls stay, 0.53 spill to dc2.
	r := newBandRig(t, names("a", 1), names("b", 3), 3)
	have := r.shares(t, 20000)
	if want := 1 - 1.4/3; math.Abs(have[1]-want) > 0.02 {
		t.Errorf("share spilled to dc2: want %.3f, have %.3f", want, have[1])
	}
	// All of dc1 back: none spills (after the ramp, shortened here).
	r.e.mu.Lock()
	r.e.bands.ramp = 50 * time.Millisecond
	r.e.mu.Unlock()
	r.send(bandState{band: 0, instances: names("a", 3), registered: 3})
	time.Sleep(50*time.Millisecond + 2*rampStep)
	if have := r.shares(t, 5000); have[1] != 0 {
		t.Errorf("dc1 whole again: want no spill, have %.3f to dc2", have[1])
	}
	// Healthy from the start: no spill and no ramp.
	if have := newBandRig(t, names("a", 3), names("b", 3), 3).shares(t, 5000); have[1] != 0 {
		t.Errorf("dc1 whole: want no spill, have %.3f to dc2", have[1])
	}
}

func TestBandsRampCallsBack(t *testing.T) {
	r := newBandRig(t, nil, names("b", 3), 3)
	if have := r.shares(t, 2000); have[1] != 1 {
		t.Fatalf("dc1 empty: want every call in dc2, have %.3f", have[1])
	}
	const ramp = time.Second
	r.e.mu.Lock()
	r.e.bands.ramp = ramp
	r.e.mu.Unlock()
	start := time.Now()
	r.send(bandState{band: 0, instances: names("a", 3), registered: 3})
	var last float64
	for time.Since(start) < ramp+4*rampStep {
		local := r.e.snapshot().bands.load[0]
		if local < last-1e-9 {
			t.Fatalf("dc1's load fell from %.3f to %.3f while its instances came back", last, local)
		}
		if el := time.Since(start); el < ramp/4 && local > 0.5 {
			t.Fatalf("dc1 took %.3f of calls %v after its instances came back: no ramp", local, el)
		}
		last = local
		time.Sleep(rampStep)
	}
	if last != 1 {
		t.Errorf("dc1's load %v after the ramp: want 1", last)
	}
}

func TestBandsRetryInBandThenNext(t *testing.T) {
	r := newBandRig(t, names("a", 3), names("b", 2), 3)
	b := NewRoundRobin(r.e)
	first, err := b.Pick(nil)
	if err != nil || first.band.Load() != 0 {
		t.Fatalf("first pick: want dc1, have band %d (%v)", first.band.Load(), err)
	}
	second, _ := b.Pick([]*Node{first})
	if second.band.Load() != 0 || second == first {
		t.Errorf("a retry: want the other dc1 instance, have %s", second.Addr())
	}
	third, _ := b.Pick([]*Node{first, second})
	if third.band.Load() != 1 {
		t.Errorf("two dc1 instances tried: want dc2, have %s", third.Addr())
	}
	fourth, _ := b.Pick([]*Node{first, second, third})
	if fourth.band.Load() != 1 || fourth == third {
		t.Errorf("then the other dc2 instance, have %s", fourth.Addr())
	}
}

func TestBandsFailStaticAndWatchErrorsPerDatacenter(t *testing.T) {
	r := newBandRig(t, names("a", 3), names("b", 3), 3)
	for _, n := range r.e.snapshot().nodes {
		if _, err := n.tracked(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
	}
	// dc2's watch fails: its instances stay.
	r.send(bandState{band: 1, err: errors.New("no path to datacenter"), registered: 3})
	if have := len(r.e.snapshot().nodes); have != 6 {
		t.Fatalf("after dc2's watch failed: want 6 instances, have %d", have)
	}
	// dc2's list empties at once (3 of 6 overall, every one of dc2's):
	// held, since they are alive.
	r.send(bandState{band: 1, registered: 0})
	s := r.e.snapshot()
	if have := len(s.bands.bands[1].tiers[tierHeld]); have != 3 {
		t.Errorf("dc2 emptied en masse: want its 3 instances held, have %d (tiers %v)", have, s.bands.bands[1].tiers)
	}
	if have := s.bands.load[0]; have != 1 {
		t.Errorf("dc1 untouched: want all calls there, have %.3f", have)
	}
}

// Datacenters that change places (a nearer one first, with _nearest)
// keep their instances, connections and scores: the bands swap, in one
// update, and calls follow the new first.
func TestBandsSwapPlaces(t *testing.T) {
	r := newBandRig(t, names("a", 3), names("b", 3), 3)
	before := map[string]*Node{}
	for _, n := range r.e.snapshot().nodes {
		before[n.Addr()] = n
	}
	r.send(bandState{band: 0, name: "dc2", instances: names("b", 3), registered: 3},
		bandState{band: 1, name: "dc1", instances: names("a", 3), registered: 3})
	s := r.e.snapshot()
	if len(s.nodes) != 6 {
		t.Fatalf("after the swap: %d instances, want 6", len(s.nodes))
	}
	for _, n := range s.nodes {
		if before[n.Addr()] != n {
			t.Errorf("%s: a new node after the swap, want the same", n.Addr())
		}
		if want := int32(0); n.Addr()[0] == 'a' {
			if n.band.Load() != 1 {
				t.Errorf("%s: band %d after the swap, want 1", n.Addr(), n.band.Load())
			}
		} else if n.band.Load() != want {
			t.Errorf("%s: band %d after the swap, want 0", n.Addr(), n.band.Load())
		}
	}
	if have := r.shares(t, 2000); have[0] != 1 {
		t.Errorf("shares %v after the swap, want every call in band 0", have)
	}
	if r.e.bands.names[0] != "dc2" || r.e.bands.names[1] != "dc1" {
		t.Errorf("band names %q after the swap, want dc2, dc1", r.e.bands.names)
	}
}

// An instance that moves to another band while its bands keep their
// names (its node now far, with Config.Near) is picked in its new band,
// on the same node.
func TestBandsInstanceMovesBand(t *testing.T) {
	r := newBandRig(t, names("a", 3), names("b", 3), 3)
	var moved *Node
	for _, n := range r.e.snapshot().nodes {
		if n.Addr() == "a2" {
			moved = n
		}
	}
	r.send(bandState{band: 0, name: "dc1", instances: names("a", 2), registered: 2},
		bandState{band: 1, name: "dc2", instances: append(names("b", 3), "a2"), registered: 4})
	for _, n := range r.e.snapshot().nodes {
		want := int32(0)
		if n.Addr()[0] == 'b' || n.Addr() == "a2" {
			want = 1
		}
		if n.band.Load() != want {
			t.Errorf("%s: band %d after a2 moved to band 1, want %d", n.Addr(), n.band.Load(), want)
		}
		if n.Addr() == "a2" && n != moved {
			t.Errorf("a2: a new node after it moved band, want the same")
		}
	}
}

func TestDCSourceReorder(t *testing.T) {
	s := &dcSource{names: []string{"dc1", "dc2", "dc3"}, order: []int{0, 1, 2}, tiers: 1, kit: &pushInstancer{},
		state: []bandState{{band: 0, name: "dc1"}, {band: 1, name: "dc2"}, {band: 2, name: "dc3"}}}
	ch := make(chan bandUpdate, 1)
	s.subs = append(s.subs, ch)
	if s.reorder([]string{"dc1", "dc2", "dc3"}) {
		t.Error("the same order: want no reorder")
	}
	// dc2 nearest now; dc4 is not watched; dc3 is not named: last.
	if !s.reorder([]string{"dc2", "dc4", "dc1"}) {
		t.Fatal("a new order: want a reorder")
	}
	u := <-ch
	var have []string
	for i, st := range u {
		if st.band != i {
			t.Errorf("update %d is of band %d", i, st.band)
		}
		have = append(have, st.name)
	}
	if want := []string{"dc2", "dc1", "dc3"}; !slices.Equal(have, want) {
		t.Errorf("bands %q after the reorder, want %q", have, want)
	}
}

func TestLocalityTiers(t *testing.T) {
	for _, c := range []struct {
		near         locality
		region, zone string
		far          bool
		want         int
		name         string
	}{
		{near: locality{}, region: "r1", zone: "z1", want: 0, name: "dc1"},
		{near: locality{near: true}, region: "r1", zone: "z1", want: 0, name: "dc1 nearby nodes"},
		{near: locality{near: true}, far: true, want: 1, name: "dc1 farther nodes"},
		{near: locality{zone: "z1", near: true}, region: "r1", zone: "z1", far: true, want: 1, name: "dc1 zone z1, farther nodes"},
		{near: locality{zone: "z1", near: true}, region: "r1", zone: "z2", want: 2, name: "dc1 elsewhere, nearby nodes"},
		{near: locality{region: "r1", zone: "z1", near: true}, region: "r1", zone: "z2", far: true, want: 3, name: "dc1 region r1, farther nodes"},
		{near: locality{region: "r1", zone: "z1", near: true}, want: 4, name: "dc1 elsewhere, nearby nodes"},
		{near: locality{region: "r1", zone: "z1", near: true}, far: true, want: 5, name: "dc1 elsewhere, farther nodes"},
	} {
		tier := c.near.tierOf(c.region, c.zone, c.far)
		if tier != c.want {
			t.Errorf("%+v: an instance in %s/%s (far %v) in tier %d, want %d", c.near, c.region, c.zone, c.far, tier, c.want)
		}
		if name := c.near.name("dc1", tier); name != c.name {
			t.Errorf("%+v: tier %d named %q, want %q", c.near, tier, name, c.name)
		}
	}
	for _, c := range []struct {
		near         locality
		region, zone string
		want         int
		name         string
	}{
		{locality{}, "r1", "z1", 0, "dc1"},
		{locality{zone: "z1"}, "r1", "z1", 0, "dc1 zone z1"},
		{locality{zone: "z1"}, "r1", "z2", 1, "dc1 elsewhere"},
		{locality{region: "r1", zone: "z1"}, "r1", "z1", 0, "dc1 zone z1"},
		{locality{region: "r1", zone: "z1"}, "r1", "z2", 1, "dc1 region r1"},
		{locality{region: "r1", zone: "z1"}, "r2", "z1", 2, "dc1 elsewhere"}, // a zone of the same name in another region
		{locality{region: "r1", zone: "z1"}, "", "", 2, "dc1 elsewhere"},
		{locality{region: "r1"}, "r1", "z9", 0, "dc1 region r1"},
		{locality{region: "r1"}, "r2", "z9", 1, "dc1 elsewhere"},
	} {
		tier := c.near.tierOf(c.region, c.zone, false)
		if tier != c.want {
			t.Errorf("%+v: an instance in %s/%s in tier %d, want %d", c.near, c.region, c.zone, tier, c.want)
		}
		if name := c.near.name("dc1", tier); name != c.name {
			t.Errorf("%+v: tier %d named %q, want %q", c.near, tier, name, c.name)
		}
	}
}

// The go-kit face of a banded source (a client of one band subscribes to
// it) has every band's instances, from the moment it is subscribed to.
func TestDCSourceGoKitFace(t *testing.T) {
	s := &dcSource{names: []string{"dc1", "dc2"}, order: []int{0, 1}, tiers: 1, kit: &pushInstancer{},
		state: []bandState{{band: 0, name: "dc1", instances: []string{"b:1", "a:1"}}, {band: 1, name: "dc2", instances: []string{"a:1", "c:1"}}}}
	ch := make(chan kitsd.Event, 1)
	s.Register(ch)
	if ev := <-ch; !slices.Equal(ev.Instances, []string{"a:1", "b:1", "c:1"}) {
		t.Errorf("on Register: %q, want every band's instances, sorted, each once", ev.Instances)
	}
	s.Deregister(ch)
}

package main

import (
	"bytes"
	"context"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"

	"github.com/trimkit/trimkit/transport/trim"
)

func TestDeckReplaysItsSeed(t *testing.T) {
	deal := func(seed uint64) []fault {
		d := newDeck(seed, faultKinds())
		var fs []fault
		for range 50 {
			fs = append(fs, d.next())
		}
		return fs
	}
	if a, b := deal(7), deal(7); !reflect.DeepEqual(a, b) {
		t.Errorf("seed 7 dealt two sequences:\n%v\n%v", a, b)
	}
	if a, b := deal(7), deal(8); reflect.DeepEqual(a, b) {
		t.Errorf("seeds 7 and 8 dealt the same sequence")
	}
}

func TestDeckDealsEveryKindEachRound(t *testing.T) {
	kinds := faultKinds()
	d := newDeck(1, kinds)
	orders := map[string]bool{}
	for round := range 20 {
		seen := map[faultKind]int{}
		var order string
		for range kinds {
			f := d.next()
			seen[f.kind]++
			order += string(f.kind) + " "
			if f.hold < minHold || f.hold >= maxHold || f.gap < minGap || f.gap >= maxGap || f.target < 0 {
				t.Errorf("round %d: %+v out of bounds", round, f)
			}
		}
		for _, k := range kinds {
			if want, have := 1, seen[k]; want != have {
				t.Errorf("round %d: %s dealt %d times, want %d", round, k, have, want)
			}
		}
		orders[order] = true
	}
	if len(orders) < 10 {
		t.Errorf("20 rounds in %d orders: not shuffled each round", len(orders))
	}
}

func TestDeckDealsCompoundFaults(t *testing.T) {
	d := newDeck(3, faultKinds())
	seen := map[faultKind]bool{}
	for range 3 * len(faultKinds()) {
		f := d.next()
		seen[f.kind] = true
		pair, overlapping := overlaps[f.kind]
		switch {
		case overlapping:
			if len(f.parts) != 2 || f.parts[0].kind != pair[0] || f.parts[1].kind != pair[1] {
				t.Errorf("%s: parts %+v, want %s then %s", f.kind, f.parts, pair[0], pair[1])
			}
			if f.lag < 0 || f.lag >= maxLag {
				t.Errorf("%s: lag %v out of [0, %v)", f.kind, f.lag, maxLag)
			}
		case f.kind == backToBack:
			if len(f.parts) != backToBackLen {
				t.Errorf("back to back: %d parts, want %d", len(f.parts), backToBackLen)
			}
			for _, p := range f.parts {
				if len(p.parts) > 0 {
					t.Errorf("back to back: a compound part %s", p.kind)
				}
			}
		default:
			if len(f.parts) > 0 {
				t.Errorf("%s: a single fault with parts %+v", f.kind, f.parts)
			}
		}
	}
	for _, k := range []faultKind{serverAgent, leaderInstance, instanceAgent, backToBack} {
		if !seen[k] {
			t.Errorf("%s never dealt in three rounds", k)
		}
	}
}

// With one datacenter the deck is what it always was: no fault of a
// datacenter, and a seed deals what it dealt before there were two.
func TestDeckOfOneDatacenterHasNoDatacenterFaults(t *testing.T) {
	if !reflect.DeepEqual(faultKinds(), deckKinds(1)) {
		t.Errorf("faultKinds %v, deckKinds(1) %v", faultKinds(), deckKinds(1))
	}
	if want, have := singleKinds(), singlesOf(faultKinds()); !reflect.DeepEqual(want, have) {
		t.Errorf("the singles of one datacenter: want %v, have %v", want, have)
	}
	d := newDeck(11, faultKinds())
	for range 5 * len(faultKinds()) {
		f := d.next()
		for _, p := range append([]fault{f}, f.parts...) {
			if slices.Contains(datacenterKinds(), p.kind) {
				t.Fatalf("one datacenter: %s dealt", p.kind)
			}
		}
	}
}

// With two datacenters the deck deals, every round, the faults of one
// datacenter's member, each fault of a datacenter, and the compound ones;
// a back-to-back fault draws from the singles of both.
func TestDeckOfTwoDatacenters(t *testing.T) {
	kinds := deckKinds(2)
	for _, k := range append(faultKinds(), datacenterKinds()...) {
		if !slices.Contains(kinds, k) {
			t.Errorf("deckKinds(2) lacks %s", k)
		}
	}
	if want, have := len(faultKinds())+len(datacenterKinds()), len(kinds); want != have {
		t.Errorf("deckKinds(2): %d kinds, want %d", have, want)
	}
	singles := singlesOf(kinds)
	if want, have := len(singleKinds())+len(datacenterKinds()), len(singles); want != have {
		t.Errorf("%d singles, want %d: %v", have, want, singles)
	}
	d := newDeck(5, kinds)
	inBackToBack := map[faultKind]bool{}
	for round := range 40 {
		seen := map[faultKind]int{}
		for range kinds {
			f := d.next()
			seen[f.kind]++
			if f.kind == backToBack {
				for _, p := range f.parts {
					if !slices.Contains(singles, p.kind) {
						t.Errorf("back to back: %s is no single fault", p.kind)
					}
					inBackToBack[p.kind] = true
				}
			}
		}
		for _, k := range kinds {
			if seen[k] != 1 {
				t.Errorf("round %d: %s dealt %d times, want once", round, k, seen[k])
			}
		}
	}
	if !slices.ContainsFunc(datacenterKinds(), func(k faultKind) bool { return inBackToBack[k] }) {
		t.Errorf("40 back-to-back faults drew no fault of a datacenter: %v", inBackToBack)
	}
}

// The WAN link stays cut long enough for calls into dc2 to time out
// (Consul's RPC hold, 7s, included at the longest), and not so long that
// a short soak is mostly the cut.
func TestWANCutHold(t *testing.T) {
	if lo, hi := wanCutFactor*minHold, wanCutFactor*maxHold; lo < 5*time.Second || hi > 30*time.Second || hi < 8*time.Second {
		t.Errorf("the WAN cut holds %v to %v", lo, hi)
	}
}

// The summary lists every kind of the deck it ran, those of a datacenter
// with two.
func TestSummaryListsTheDatacenterFaults(t *testing.T) {
	for _, dcs := range []int{1, 2} {
		// An answer as the load expects one: a call may start before Stop.
		l := newLoad(func(context.Context, interface{}) (interface{}, error) { return trim.TrimResponse{Instance: "a"}, nil }, 100)
		l.start(context.Background())
		l.Stop()
		var buf bytes.Buffer
		s := &soak{w: &buf, cfg: config{dcs: dcs, duration: time.Minute, rate: 100, sequence: sequenceDeck}, load: l,
			discovery: &discoveryWatch{next: log.NewNopLogger()}}
		s.summary(time.Second)
		for _, k := range datacenterKinds() {
			if listed := strings.Contains(buf.String(), "\n  "+string(k)+" "); listed != (dcs == 2) {
				t.Errorf("%d datacenters: %s listed %t:\n%s", dcs, k, listed, buf.String())
			}
		}
		if want := "DCS=2"; strings.Contains(replay(s.cfg, 1), want) != (dcs == 2) {
			t.Errorf("%d datacenters: replay %q", dcs, replay(s.cfg, 1))
		}
	}
}

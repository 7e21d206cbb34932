package main

import (
	"reflect"
	"testing"
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

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

package client_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/connectivity"

	"github.com/trimkit/trimkit/client"
)

func addrs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("10.0.%d.%d:8080", i/250, i%250)
	}
	return out
}

// subsets is the subset of size of callers 0..callers-1.
func subsets(instances []string, size, callers int) [][]string {
	out := make([][]string, callers)
	for c := range out {
		out[c] = client.SubsetOrder(instances, size, uint64(c))[:min(size, len(instances))]
	}
	return out
}

// spread counts the callers of each instance.
func spread(subs [][]string) map[string]int {
	count := map[string]int{}
	for _, s := range subs {
		for _, inst := range s {
			count[inst]++
		}
	}
	return count
}

func TestSubsetIsDeterministic(t *testing.T) {
	instances := addrs(100)
	shuffled := slices.Clone(instances)
	rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	for caller := range uint64(30) {
		a := client.SubsetOrder(instances, 10, caller)
		b := client.SubsetOrder(shuffled, 10, caller)
		if !slices.Equal(a, b) {
			t.Fatalf("caller %d: the order depends on the order discovery lists instances in:\n%v\n%v", caller, a, b)
		}
		if !slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(instances))) {
			t.Fatalf("caller %d: the order is not a permutation of the instances: %v", caller, a)
		}
	}
	// The same in every process: the ring is a fixed hash of the address.
	if got := client.SubsetOrder([]string{"a:1", "b:1", "c:1", "d:1"}, 2, 1)[:2]; !slices.Equal(got, subsetGolden) {
		t.Fatalf("caller 1's subset of a..d is %v, was %v in earlier versions: the ring changed, and with it every fleet's subsets", got, subsetGolden)
	}
}

var subsetGolden = []string{"d:1", "a:1"}

func TestSubsetSpreadsCallersEvenly(t *testing.T) {
	for _, tc := range []struct{ instances, size, callers int }{
		{1000, 20, 100}, {1000, 20, 77}, {1000, 20, 1}, {1100, 20, 100}, {900, 20, 100}, {37, 5, 11}, {10, 3, 1000},
	} {
		instances := addrs(tc.instances)
		subs := subsets(instances, tc.size, tc.callers)
		count := spread(subs)
		lo, hi := tc.callers, 0
		for _, inst := range instances {
			lo, hi = min(lo, count[inst]), max(hi, count[inst])
		}
		if hi-lo > 1 {
			t.Errorf("%+v: callers per instance from %d to %d, want within one of each other", tc, lo, hi)
		}
		for c, s := range subs {
			if len(s) != tc.size || len(slices.Compact(slices.Sorted(slices.Values(s)))) != tc.size {
				t.Fatalf("%+v: caller %d's subset %v is not %d distinct instances", tc, c, s, tc.size)
			}
		}
	}
	// A random pick, which numbering callers avoids, is far from even.
	instances := addrs(1000)
	random := make([][]string, 100)
	for c := range random {
		random[c] = client.SubsetOrder(instances, 20, rand.Uint64())[:20]
	}
	count := spread(random)
	hi := 0
	for _, inst := range instances {
		hi = max(hi, count[inst])
	}
	if hi < 4 {
		t.Errorf("random caller numbers: at most %d callers per instance; a random pick should leave some with twice the mean of 2", hi)
	}
}

func TestSubsetMovesLittleOnChurn(t *testing.T) {
	const size, callers = 20, 100
	instances := addrs(1000)
	before := subsets(instances, size, callers)
	for _, change := range []struct {
		name      string
		instances []string
	}{
		{"one joins", append(slices.Clone(instances), "10.9.9.9:8080")},
		{"one leaves", slices.Delete(slices.Clone(instances), 500, 501)},
	} {
		after := subsets(change.instances, size, callers)
		moved, worst := 0, 0
		for c := range callers {
			gone := 0
			for _, inst := range before[c] {
				if !slices.Contains(after[c], inst) {
					gone++
				}
			}
			moved += gone
			worst = max(worst, gone)
		}
		// Callers past the first lap (c×size ≥ 1,000) start one position
		// earlier or later, and every subset past the change shifts by one.
		if worst > 2 {
			t.Errorf("%s: a caller's subset lost %d instances, want at most 2", change.name, worst)
		}
		// The SRE book's reshuffle would move most of the 2,000 members.
		if moved > callers*3/2 {
			t.Errorf("%s: %d of %d subset members moved, want at most %d", change.name, moved, callers*size, callers*3/2)
		}
		t.Logf("%s: %d of %d subset members moved, at most %d in one subset", change.name, moved, callers*size, worst)
	}
}

func TestSubsetEveryInstanceBelowTheSize(t *testing.T) {
	for _, size := range []int{0, 5, 6} {
		if got := client.SubsetOrder(addrs(5), size, 3); len(got) != 5 {
			t.Errorf("size %d of 5 instances: %v", size, got)
		}
	}
	if got := client.SubsetOrder(nil, 3, 3); len(got) != 0 {
		t.Errorf("no instances: %v", got)
	}
}

// TestSubsetEndpointer checks the Endpointer's subset: it connects to the
// subset only; a failed member is covered by the others, and when failures
// leave fewer than three quarters of it healthy, the next instances of its
// order join it, to leave again once the members are back.
func TestSubsetEndpointer(t *testing.T) {
	names := addrs(10)
	r := newStaticRig(t, names, withSubset(4, 2))
	order := client.SubsetOrder(names, 4, 1)
	want := slices.Sorted(slices.Values(order[:4]))
	waitMembers(t, r.e, want)
	call := func(n int) {
		t.Helper()
		r.f.reset()
		for range n {
			if _, err := r.call(t.Context(), "x"); err != nil {
				t.Fatal(err)
			}
		}
	}
	call(40)
	for _, inst := range names {
		if in := slices.Contains(want, inst); in != (r.f.count(inst) > 0) {
			t.Fatalf("%s, in the subset %v: %t, has %d calls", inst, want, in, r.f.count(inst))
		}
	}

	// One failed member of four: the other three cover it.
	r.conns[order[1]].set(connectivity.TransientFailure)
	time.Sleep(50 * time.Millisecond)
	waitMembers(t, r.e, want)
	call(30)
	if n := r.f.count(order[1]); n > 0 {
		t.Fatalf("the failed member got %d of 30 calls", n)
	}
	// Two: the subset takes the next instance of its order.
	r.conns[order[2]].set(connectivity.TransientFailure)
	waitMembers(t, r.e, slices.Sorted(slices.Values(order[:5])))
	call(30)
	if n := r.f.count(order[4]); n == 0 {
		t.Fatalf("the instance covering the failed ones got none of 30 calls")
	}
	for _, m := range order[1:3] {
		r.conns[m].set(connectivity.Ready)
	}
	waitMembers(t, r.e, want)

	// Discovery drops a member: the subset of the rest is the one
	// subsetOrder gives them. (The fake connection of the instance let go
	// above was closed; a new one would connect.)
	r.conns[order[4]].set(connectivity.Ready)
	rest := slices.DeleteFunc(slices.Clone(names), func(s string) bool { return s == order[0] })
	r.inst.send(kitsdEvent(rest...))
	waitMembers(t, r.e, slices.Sorted(slices.Values(client.SubsetOrder(rest, 4, 1)[:4])))
}

func waitMembers(t *testing.T, e *client.Endpointer, want []string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var have []string
		for _, n := range client.Instances(e) {
			have = append(have, n.Addr())
		}
		slices.Sort(have)
		if slices.Equal(have, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("members %v, want %v", have, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSubsetConvergesOneSwapAtATime checks that instances joining do not
// move a subset at once: it keeps its members and swaps one at a time,
// a step apart, until it is the subset subsetOrder gives it now.
func TestSubsetConvergesOneSwapAtATime(t *testing.T) {
	if testing.Short() {
		t.Skip("takes a few seconds of subset steps")
	}
	names := addrs(40)
	first := names[:10]
	r := newStaticRig(t, names, withSubset(4, 1))
	go func() { // the fakes report each close, more than their channel holds
		for {
			select {
			case <-r.f.closed:
			case <-t.Context().Done():
				return
			}
		}
	}()
	r.inst.send(kitsdEvent(first...))
	before := slices.Sorted(slices.Values(client.SubsetOrder(first, 4, 0)[:4]))
	waitMembers(t, r.e, before)
	// The fake connections of the instances let go were closed; a new
	// one would connect.
	time.Sleep(50 * time.Millisecond)
	for _, n := range names {
		if !slices.Contains(before, n) {
			r.conns[n].set(connectivity.Ready)
		}
	}

	// Thirty join: the subset's place on the ring now holds other instances.
	r.inst.send(kitsdEvent(names...))
	after := slices.Sorted(slices.Values(client.SubsetOrder(names, 4, 0)[:4]))
	moves := 0
	for _, m := range before {
		if !slices.Contains(after, m) {
			moves++
		}
	}
	if moves < 2 {
		t.Fatalf("the test needs a join that moves at least 2 members; it moves %d: %v -> %v", moves, before, after)
	}
	// The first swap may come at once; the others a step apart.
	current, seen := before, 0
	start := time.Now()
	for !slices.Equal(current, after) {
		if time.Since(start) > time.Duration(moves+3)*time.Second {
			t.Fatalf("after %v: members %v, want %v", time.Since(start), current, after)
		}
		time.Sleep(5 * time.Millisecond)
		next := members(r.e)
		if slices.Equal(next, current) {
			continue
		}
		gone := 0
		for _, m := range current {
			if !slices.Contains(next, m) {
				gone++
			}
		}
		if gone > 1 || len(next) != 4 {
			t.Fatalf("members moved from %v to %v at once, want one swap", current, next)
		}
		seen++
		current = next
	}
	if seen != moves {
		t.Errorf("%d swaps, want %d", seen, moves)
	}
	if took := time.Since(start); took < time.Duration(moves-1)*900*time.Millisecond {
		t.Errorf("%d swaps in %v: want a step between them", moves, took)
	}
}

func members(e *client.Endpointer) []string {
	var have []string
	for _, n := range client.Instances(e) {
		have = append(have, n.Addr())
	}
	slices.Sort(have)
	return have
}

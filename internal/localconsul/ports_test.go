package localconsul

import (
	"net"
	"strconv"
	"testing"
)

func TestFreePortsAreDistinctBindableAndNotEphemeral(t *testing.T) {
	ports, err := FreePorts(7)
	if err != nil {
		t.Fatal(err)
	}
	lo, hi := belowEphemeral()
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] {
			t.Fatalf("port %d returned twice: %v", p, ports)
		}
		seen[p] = true
		if hi > lo && (p < lo || p >= hi) {
			t.Errorf("port %d outside %d-%d, where outgoing connections cannot take it", p, lo, hi)
		}
		tcp, udp, err := hold(p)
		if err != nil {
			t.Errorf("port %d not free for TCP and UDP: %v", p, err)
			continue
		}
		tcp.Close()
		udp.Close()
	}
	if hi > lo {
		// What the range is for: the kernel gives a connection a source
		// port in the ephemeral range, never below it.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, sp, _ := net.SplitHostPort(c.LocalAddr().String())
		if p, _ := strconv.Atoi(sp); p >= lo && p < hi {
			t.Errorf("outgoing source port %d is inside the claimed range %d-%d", p, lo, hi)
		}
	}
}

// A claimed block's ports are never handed out again, though nothing
// listens on them, until the block is given back.
func TestClaimedPortsAreNotClaimedAgain(t *testing.T) {
	lo, hi := belowEphemeral()
	if hi-lo < blockSize {
		t.Skipf("no room below the ephemeral range (%d-%d): the kernel picks", lo, hi)
	}
	first, err := claimPorts(6)
	if err != nil {
		t.Fatal(err)
	}
	owner := map[int]int{}
	for _, p := range first.ports {
		owner[p] = 0
	}
	var blocks []*portBlock
	defer func() {
		for _, b := range blocks {
			b.Close()
		}
	}()
	for i := 1; i <= 300; i++ {
		b, err := claimPorts(6)
		if err != nil {
			t.Fatal(err)
		}
		blocks = append(blocks, b)
		for _, p := range b.ports {
			if o, ok := owner[p]; ok {
				t.Fatalf("port %d claimed by block %d and again by block %d", p, o, i)
			}
			owner[p] = i
		}
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

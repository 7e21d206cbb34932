package localconsul

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// blockSize is how many ports a portBlock spans: the lock port and the
// ports handed out (an agent needs 6).
const blockSize = 8

// portBlock is a run of ports that one process has claimed from every
// other process that claims ports the same way: its first port, the lock,
// is held by a listener for as long as the block is in use, and a process
// looking for ports skips a block whose lock it cannot take. The ports of
// the block stay the holder's while nothing listens on them, as a cluster
// member's do while it is down: it restarts on them, its peers know it
// there.
//
// Blocks are taken from below the kernel's ephemeral range
// (net.ipv4.ip_local_port_range) when there is room there, where no
// outgoing connection and no bind to port 0 (a trimsvc, a test server)
// can take a port. Where the range cannot be read or leaves no room, the
// kernel picks each port (port 0) and nothing is claimed.
type portBlock struct {
	lock  io.Closer // nil when the kernel picked
	ports []int
}

// claimPorts claims n (at most blockSize-1) ports that are free, for both
// TCP and UDP, on 127.0.0.1.
func claimPorts(n int) (*portBlock, error) {
	if n > blockSize-1 {
		return nil, fmt.Errorf("claim %d ports: at most %d", n, blockSize-1)
	}
	lo, hi := belowEphemeral()
	if hi-lo < blockSize {
		ports, err := kernelPorts(n)
		return &portBlock{ports: ports}, err
	}
	for range 1000 {
		first := lo + blockSize*rand.IntN((hi-lo)/blockSize)
		lock, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(first)))
		if err != nil {
			continue // another process's block, or taken
		}
		b := &portBlock{lock: lock}
		var probes []io.Closer
		for p := first + 1; p < first+blockSize && len(b.ports) < n; p++ {
			tcp, udp, err := hold(p)
			if err != nil {
				continue
			}
			probes = append(probes, tcp, udp)
			b.ports = append(b.ports, p)
		}
		for _, c := range probes {
			c.Close()
		}
		if len(b.ports) == n {
			return b, nil
		}
		lock.Close()
	}
	return nil, fmt.Errorf("claim %d free ports in %d-%d: no free block found", n, lo, hi)
}

// Close gives the block back; closing it again does nothing.
func (b *portBlock) Close() error {
	if b == nil || b.lock == nil {
		return nil
	}
	err := b.lock.Close()
	b.lock = nil
	return err
}

// FreePorts returns n (at most 7) distinct ports that were free for both
// TCP and UDP on 127.0.0.1 a moment ago, from below the kernel's
// ephemeral range where there is room (see portBlock); they are not held.
func FreePorts(n int) ([]int, error) {
	b, err := claimPorts(n)
	if err != nil {
		return nil, err
	}
	return b.ports, b.Close()
}

// kernelPorts has the kernel pick n distinct ports.
func kernelPorts(n int) ([]int, error) {
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	ports := make([]int, 0, n)
	for len(ports) < n {
		tcp, udp, err := hold(0)
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		// Held until all are found, so they are distinct.
		held = append(held, tcp, udp)
		ports = append(ports, tcp.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// hold binds port (0: any) on 127.0.0.1 for TCP and for UDP, as Consul
// does for its DNS and gossip ports.
func hold(port int) (net.Listener, net.PacketConn, error) {
	for tries := 1; ; tries++ {
		tcp, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			return nil, nil, err
		}
		p := tcp.Addr().(*net.TCPAddr).Port
		udp, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err == nil {
			return tcp, udp, nil
		}
		tcp.Close()
		if port != 0 || tries == 10 {
			return nil, nil, err
		}
		// The kernel's TCP pick is taken for UDP: pick again.
	}
}

// belowEphemeral returns the ports [lo, hi) to claim from: the half below
// the kernel's ephemeral range, never privileged ports; lo == hi when
// there is no such room.
func belowEphemeral() (lo, hi int) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0
	}
	low, err := strconv.Atoi(f[0])
	if err != nil || low < 2048+1024 {
		return 0, 0
	}
	return max(low/2, 2048), low
}

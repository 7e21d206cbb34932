package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/internal/pki"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/pb"
)

// attacker is a running attacker process.
type attacker struct{ stdout func() string }

// counts are the last "opened N closed M" the attacker printed.
func (a attacker) counts() (opened, closed int) {
	lines := strings.Split(strings.TrimSpace(a.stdout()), "\n")
	_, _ = fmt.Sscanf(lines[len(lines)-1], "opened %d closed %d", &opened, &closed)
	return opened, closed
}

// startAttacker starts internal/connflood (built without the race
// detector, as an attacker's program is) against addr; it is stopped when
// the test ends.
func startAttacker(t *testing.T, addr string, n int, mode string) attacker {
	t.Helper()
	p := testenv.Start(t, bins.Path(t, "github.com/trimkit/trimkit/internal/connflood"), "-addr", addr, "-n", strconv.Itoa(n), "-mode", mode)
	t.Cleanup(func() { p.Stop(5 * time.Second) })
	return attacker{stdout: p.Stdout}
}

// callerResult is how a legitimate caller's calls went.
type callerResult struct {
	latencies []time.Duration
	failures  []string
}

// p99 is the 99th percentile latency, by nearest rank.
func (r callerResult) p99() time.Duration {
	return loadgen.Percentile(slices.Sorted(slices.Values(r.latencies)), 99)
}

// The attack of an unauthenticated caller on an mTLS instance's connection
// limit: one process without a certificate holds twice the limit (1,024
// by default) of connections that send nothing, or a ClientHello and then
// nothing, and opens a new one as soon as the instance closes one. Two
// legitimate callers, with certificates, each call every 100ms for 10s:
// one on a connection it dials once the attack is at full strength, and
// one that dials a new connection for every call (as grpcurl does). Not
// one of their calls fails, and calls on the kept connection keep their
// p99 under 50ms (a new connection waits behind the attacker's in the
// kernel's accept queue).
func TestIdleConnectionFloodLocksNoCallerOut(t *testing.T) {
	for _, mode := range []string{"silent", "hello"} {
		t.Run(mode, func(t *testing.T) {
			in, ca := mtlsInstance(t)
			good, err := ca.Issue(pki.Leaf{Name: "caller", Usage: pki.Client})
			if err != nil {
				t.Fatal(err)
			}
			creds := credentials.NewTLS(ca.ClientConfig(good.TLS()))
			const limit = 1024 // grpcserver.DefaultLimits.MaxConnections
			a := startAttacker(t, in.Addr, 2*limit, mode)
			eventually(t, 30*time.Second, "the attacker holding twice the connection limit", func() (bool, error) {
				opened, _ := a.counts()
				return opened >= 2*limit, nil
			})

			call := func(conn *grpc.ClientConn) error {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_, err := pb.NewTrimClient(conn).TrimSpace(ctx, &pb.TrimRequest{S: " a b "})
				return err
			}
			// The kept connection is made under the attack too: its first
			// call waits for it, and must not fail.
			kept, err := grpc.NewClient(in.Addr, grpc.WithTransportCredentials(creds))
			if err != nil {
				t.Fatal(err)
			}
			defer kept.Close()
			start := time.Now()
			if err := call(kept); err != nil {
				t.Fatalf("the first call, on a new connection: %v", err)
			}
			t.Logf("a connection made under the attack: its first call took %v", time.Since(start).Round(time.Millisecond))
			fresh := func() error {
				conn, err := grpc.NewClient(in.Addr, grpc.WithTransportCredentials(creds))
				if err != nil {
					return err
				}
				defer conn.Close()
				return call(conn)
			}

			var (
				mu      sync.Mutex
				results = map[string]*callerResult{"kept connection": {}, "new connection per call": {}}
				wg      sync.WaitGroup
			)
			measure := func(name string, f func() error) {
				defer wg.Done()
				start := time.Now()
				err := f()
				mu.Lock()
				defer mu.Unlock()
				r := results[name]
				r.latencies = append(r.latencies, time.Since(start))
				if err != nil {
					r.failures = append(r.failures, fmt.Sprintf("%s: %v", start.Format("15:04:05.000"), err))
				}
			}
			_, closedBefore := a.counts()
			tick := time.NewTicker(100 * time.Millisecond)
			for range 100 { // an open loop: a slow call delays no other
				<-tick.C
				wg.Add(2)
				go measure("kept connection", func() error { return call(kept) })
				go measure("new connection per call", fresh)
			}
			tick.Stop()
			wg.Wait()
			opened, closed := a.counts()
			t.Logf("attacker: %d connections opened, %d closed by the instance during the calls", opened, closed-closedBefore)
			_, metrics := get(t, "http://"+in.HTTPAddr+"/metrics")
			for _, line := range strings.Split(metrics, "\n") {
				if strings.HasPrefix(line, "trimsvc_connections_") {
					t.Log(line)
				}
			}
			for name, r := range results {
				t.Logf("%s: %d calls, %d failed, p99 %v, max %v", name, len(r.latencies), len(r.failures), r.p99().Round(time.Microsecond), slices.Max(r.latencies).Round(time.Microsecond))
				if len(r.failures) > 0 {
					t.Errorf("%s: %d of %d calls failed, first: %s", name, len(r.failures), len(r.latencies), r.failures[0])
				}
			}
			// A new connection waits behind the attacker's in the kernel's
			// accept queue (see docs/security.md): only calls on a
			// connection are held to the latency bound.
			if p99 := results["kept connection"].p99(); p99 > 50*time.Millisecond {
				t.Errorf("kept connection: p99 %v, want under 50ms", p99)
			}
		})
	}
}

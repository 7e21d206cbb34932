package main

import (
	"context"
	"crypto/tls"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/internal/pki"
	"github.com/trimkit/trimkit/internal/proc"
	"github.com/trimkit/trimkit/pb"
)

// peakRSS is the process's peak resident set size (VmHWM), in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	n, err := proc.Memory(pid, "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// flood makes n concurrent calls with the largest input trimsvc accepts
// (1 MiB), each on a connection of its own, and returns how they ended, by
// code. With connected, every connection is made before the first call
// starts: the calls then all start together, and a test process busy
// making 400 of them does not keep a new connection silent for longer
// than the server's FirstByteTimeout.
func flood(t *testing.T, addr string, n int, creds credentials.TransportCredentials, connected bool) map[codes.Code]int {
	t.Helper()
	input := strings.Repeat("x", 1<<20)
	var (
		mu    sync.Mutex
		codes = map[codes.Code]int{}
		wg    sync.WaitGroup
		ready sync.WaitGroup
		start = make(chan struct{})
	)
	for range n {
		wg.Add(1)
		ready.Add(1)
		go func() {
			defer wg.Done()
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
			if err != nil {
				ready.Done()
				t.Error(err)
				return
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if connected {
				for conn.Connect(); conn.GetState() != connectivity.Ready; {
					if !conn.WaitForStateChange(ctx, conn.GetState()) {
						break // the call below fails and says why
					}
				}
			}
			ready.Done()
			<-start
			_, err = pb.NewTrimClient(conn).TrimSpace(ctx, &pb.TrimRequest{S: input})
			mu.Lock()
			codes[status.Code(err)]++
			mu.Unlock()
		}()
	}
	ready.Wait()
	close(start)
	wg.Wait()
	return codes
}

// floodBound is the peak memory trimsvc may reach under the flood: 64 MB
// for itself, plus, for each of the 128 calls in flight it admits at most,
// 3 MiB (the request, 1 MiB + 1 KiB; its decoded copy; its answer), and
// half as much again for garbage of finished calls the collector has not
// reclaimed yet (how much there is depends on when it runs: the peak
// measured 270 to 490 MB). Before the limits, 400 such calls took it to
// 757 MB, and more calls to more.
const floodBound = 64<<20 + 3*128*3*(1<<20)/2

// Many concurrent calls of the largest input cost a bounded amount of
// memory, however many there are: over 128 in flight they are refused
// (ResourceExhausted) before their request is read.
func TestConcurrentMaximumSizeCallsCostBoundedMemory(t *testing.T) {
	in := startInstance(t, "127.0.0.1:1", "-register=false")
	before := peakRSS(t, in.PID())
	ended := flood(t, in.Addr, 400, insecure.NewCredentials(), true)
	peak := peakRSS(t, in.PID())
	t.Logf("400 concurrent 1 MiB calls: %v; peak RSS %d MB before, %d MB after (bound %d MB)", ended, before>>20, peak>>20, floodBound>>20)
	if ended[codes.OK] == 0 {
		t.Error("no call succeeded")
	}
	for code := range ended {
		if code != codes.OK && code != codes.ResourceExhausted {
			t.Errorf("calls ended with %v: want OK or ResourceExhausted only", code)
		}
	}
	if peak > floodBound {
		t.Errorf("peak RSS %d MB over the bound of %d MB", peak>>20, floodBound>>20)
	}
}

// mtlsInstance is a trimsvc, registering nowhere, that serves mutual TLS
// with a certificate of ca and its HTTP debug server on: a caller needs a
// certificate of ca too.
func mtlsInstance(t *testing.T) (*proc.Trimsvc, *pki.CA) {
	t.Helper()
	ca, err := pki.NewCA(t.TempDir(), "ca")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.LoopbackServer("server")
	if err != nil {
		t.Fatal(err)
	}
	return startInstance(t, "127.0.0.1:1", "-register=false", "-http-addr", "127.0.0.1:0",
		"-tls-cert-file", srv.CertFile, "-tls-key-file", srv.KeyFile, "-tls-client-ca-file", ca.File), ca
}

// A caller without a client certificate costs an mTLS instance no message
// buffer: it is refused in the handshake, before any request is read.
func TestUnauthenticatedCallersCostNoMessageBuffer(t *testing.T) {
	in, ca := mtlsInstance(t)
	before := peakRSS(t, in.PID())
	ended := flood(t, in.Addr, 300, credentials.NewTLS(ca.ClientConfig(nil)), false)
	peak := peakRSS(t, in.PID())
	t.Logf("300 concurrent 1 MiB calls without a client certificate: %v; peak RSS %d MB before, %d MB after", ended, before>>20, peak>>20)
	if want, have := 300, ended[codes.Unavailable]; want != have {
		t.Errorf("want every call refused in the handshake (Unavailable), have %v", ended)
	}
	// Not one 1 MiB request buffered: the growth is that of 300 refused
	// handshakes, far below one request per caller.
	if grew := peak - before; grew > 32<<20 {
		t.Errorf("peak RSS grew by %d MB", grew>>20)
	}
	// And no call reached the service.
	if _, metrics := get(t, "http://"+in.HTTPAddr+"/metrics"); strings.Contains(metrics, "trimsvc_requests_total{") {
		t.Errorf("a refused caller's call reached the service:\n%s", metrics)
	}
}

// The attacks on mutual TLS, against a real trimsvc: a forged
// certificate carrying the signature of one that was accepted, a
// certificate that expired after it was accepted (on its connection and a
// new one), another CA's, none, and certificates not for calling. Each is
// refused, and no call reaches the service.
func TestMutualTLSAttacksOnARealInstance(t *testing.T) {
	in, ca := mtlsInstance(t)
	dial := func(cert *tls.Certificate) *grpc.ClientConn {
		conn, err := grpc.NewClient(in.Addr, grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientConfig(cert))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	call := func(conn *grpc.ClientConn) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := pb.NewTrimClient(conn).TrimSpace(ctx, &pb.TrimRequest{S: "a b"})
		return err
	}
	served := func() string {
		_, metrics := get(t, "http://"+in.HTTPAddr+"/metrics")
		for _, line := range strings.Split(metrics, "\n") {
			if strings.HasPrefix(line, "trimsvc_requests_total{") {
				return line
			}
		}
		return ""
	}

	good, err := ca.Issue(pki.Leaf{Name: "caller", Usage: pki.Client})
	if err != nil {
		t.Fatal(err)
	}
	// Certificates hold whole seconds: at least 2s left, whatever the clock's fraction.
	short, err := ca.Issue(pki.Leaf{Name: "short", Usage: pki.Client, NotAfter: time.Now().Truncate(time.Second).Add(3 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	kept := dial(short.TLS())
	for _, conn := range []*grpc.ClientConn{dial(good.TLS()), kept} {
		if err := call(conn); err != nil {
			t.Fatalf("a caller with a certificate of the CA: %v", err)
		}
	}
	accepted := served()
	if !strings.HasSuffix(accepted, " 2") {
		t.Fatalf("want 2 calls served, have %q", accepted)
	}

	attacks, err := pki.Attacks(ca, good, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(short.Cert.NotAfter) + 10*time.Millisecond) // the short-lived certificate expires
	type refusal struct {
		name string
		conn *grpc.ClientConn
		want string
	}
	cases := []refusal{
		{"expired, on the connection it was accepted on", kept, "Unauthenticated"},
		{"expired, on a new connection", dial(short.TLS()), "tls: expired certificate"},
	}
	for _, a := range attacks {
		cases = append(cases, refusal{a.Name, dial(a.Cert), a.Alert})
	}
	for _, tc := range cases {
		err := call(tc.conn)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: want an error saying %q, have %v", tc.name, tc.want, err)
		}
	}
	if have := served(); have != accepted {
		t.Errorf("refused callers reached the service: %q, then %q", accepted, have)
	}
}

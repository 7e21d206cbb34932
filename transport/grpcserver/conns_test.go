package grpcserver

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/kit/metrics"
	"github.com/go-kit/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trimkit/trimkit/internal/logbuf"
	"github.com/trimkit/trimkit/internal/pki"
	"github.com/trimkit/trimkit/internal/tlsfiles"
)

// counts is a go-kit counter that counts by its label values.
type counts struct {
	mu     *sync.Mutex
	m      map[string]float64
	labels string
}

func newCounts() counts { return counts{mu: new(sync.Mutex), m: map[string]float64{}} }

func (c counts) With(lv ...string) metrics.Counter {
	c.labels = strings.Join(lv, "=")
	return c
}

func (c counts) Add(d float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[c.labels] += d
}

func (c counts) get(labels string) float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[labels]
}

// listenerTest is a connListener with a "server" of the test's own: the
// test accepts each connection and decides when the server reads it.
type listenerTest struct {
	t       *testing.T
	l       *connListener
	metrics struct{ refused, evicted, timedOut counts }
	log     *logbuf.Buffer
}

func newListenerTest(t *testing.T, limits Limits) *listenerTest {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lt := &listenerTest{t: t, log: new(logbuf.Buffer)}
	lt.metrics.refused, lt.metrics.evicted, lt.metrics.timedOut = newCounts(), newCounts(), newCounts()
	limits.Metrics = AdmissionMetrics{ConnsRefused: lt.metrics.refused, ConnsEvicted: lt.metrics.evicted, ConnsTimedOut: lt.metrics.timedOut}
	limits.Logger = log.NewLogfmtLogger(lt.log)
	lt.l = newConnListener(lis, limits.WithDefaults())
	lt.l.minWait = 20 * time.Millisecond
	t.Cleanup(func() { lt.l.Close() })
	return lt
}

// dial connects a client.
func (lt *listenerTest) dial() net.Conn {
	lt.t.Helper()
	c, err := net.Dial("tcp", lt.l.Addr().String())
	if err != nil {
		lt.t.Fatal(err)
	}
	lt.t.Cleanup(func() { c.Close() })
	return c
}

// accept returns the next connection the listener admits.
func (lt *listenerTest) accept() *conn {
	lt.t.Helper()
	c, err := lt.l.Accept()
	if err != nil {
		lt.t.Fatal(err)
	}
	return c.(*conn)
}

// acceptLater accepts the next connection in a goroutine of its own: it
// comes on accepted, or Accept's error on failed.
func (lt *listenerTest) acceptLater() (accepted <-chan *conn, failed <-chan error) {
	ok, fail := make(chan *conn, 1), make(chan error, 1)
	go func() {
		c, err := lt.l.Accept()
		if err != nil {
			fail <- err
			return
		}
		ok <- c.(*conn)
	}()
	return ok, fail
}

// connect dials and accepts one connection.
func (lt *listenerTest) connect() (client net.Conn, server *conn) {
	lt.t.Helper()
	client = lt.dial()
	return client, lt.accept()
}

// serverWaits starts a Read on the server's side of c, as a server waiting for
// its caller does, and returns what it will read.
func serverWaits(c *conn) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		done <- err
	}()
	return done
}

// closedByServer reports whether the server closed client's connection.
func closedByServer(t *testing.T, client net.Conn) bool {
	t.Helper()
	_ = client.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := client.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return err != nil
}

// stillOpen reports whether client's connection is still open, within a
// short look.
func stillOpen(t *testing.T, client net.Conn) bool {
	t.Helper()
	_ = client.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := client.Read(make([]byte, 1))
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// state is the listener's counts: open, waiting, the server's turn.
func (lt *listenerTest) state() (open, waiting, turn int) {
	lt.l.mu.Lock()
	defer lt.l.mu.Unlock()
	return lt.l.open, lt.l.waiting.n, lt.l.turn.n
}

func TestEstablishedConnectionsAreNeverEvictedNewOnesRefused(t *testing.T) {
	lt := newListenerTest(t, Limits{MaxConnections: 2, MaxPendingConnections: 2})
	var clients []net.Conn
	for range 2 {
		client, server := lt.connect()
		serverWaits(server) // it would be evicted, were it pending
		_ = server.SetDeadline(time.Time{})
		clients = append(clients, client)
	}
	time.Sleep(2 * lt.l.minWait)
	refusedClient := lt.dial()
	accepted, _ := lt.acceptLater()
	if !closedByServer(t, refusedClient) {
		t.Fatal("a connection over the limit of established ones: want it closed at once")
	}
	for i, c := range clients {
		if !stillOpen(t, c) {
			t.Errorf("established connection %d was closed", i)
		}
	}
	if want, have := 1.0, lt.metrics.refused.get(""); want != have {
		t.Errorf("refused: want %v, have %v", want, have)
	}
	if have := lt.metrics.evicted.get(""); have != 0 {
		t.Errorf("evicted: want 0, have %v", have)
	}
	if len(lt.log.Lines("at the connection limit")) != 1 {
		t.Errorf("want one line saying the limit is reached:\n%s", lt.log)
	}
	select {
	case c := <-accepted:
		t.Fatalf("a connection over the limit was accepted: %v", c.RemoteAddr())
	default:
	}
}

func TestPendingConnectionsAreBoundedAndTheLongestWaitingEvicted(t *testing.T) {
	lt := newListenerTest(t, Limits{MaxConnections: 10, MaxPendingConnections: 2})
	c1, s1 := lt.connect()
	w1 := serverWaits(s1)
	c2, s2 := lt.connect()
	serverWaits(s2)
	time.Sleep(2 * lt.l.minWait)
	// A third pending connection: the first, waiting longest, makes room.
	c3, _ := lt.connect()
	if err := <-w1; err == nil {
		t.Error("the evicted connection's read: want an error")
	}
	if !closedByServer(t, c1) {
		t.Error("the connection that waited longest was not evicted")
	}
	for i, c := range []net.Conn{c2, c3} {
		if !stillOpen(t, c) {
			t.Errorf("connection %d was closed", i+2)
		}
	}
	if want, have := 1.0, lt.metrics.evicted.get(""); want != have {
		t.Errorf("evicted: want %v, have %v", want, have)
	}
	if open, waiting, turn := lt.state(); open != 2 || waiting+turn != 2 {
		t.Errorf("want 2 open and pending, have %d open, %d waiting, %d the server's turn", open, waiting, turn)
	}
}

// A pending connection whose caller has answered (its bytes not read yet:
// a busy server has not got back to it) is not the one evicted, however
// long it waited before.
func TestAPendingConnectionWhoseCallerAnsweredIsNotEvicted(t *testing.T) {
	lt := newListenerTest(t, Limits{MaxConnections: 10, MaxPendingConnections: 2})
	c1, s1 := lt.connect()
	lt.l.block(s1, true, false) // the server waits to read it, but does not run
	c2, s2 := lt.connect()
	serverWaits(s2)
	time.Sleep(2 * lt.l.minWait)
	if _, err := c1.Write([]byte{22}); err != nil { // its caller answers
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // for the byte to arrive
	lt.connect()
	if !closedByServer(t, c2) {
		t.Error("the connection waiting for its caller was not evicted")
	}
	if !stillOpen(t, c1) {
		t.Error("the connection whose caller answered was evicted")
	}
}

// When every pending connection is the server's turn, a new one waits to
// be accepted until one of them waits for its caller long enough.
func TestAcceptWaitsWhileThePendingAreTheServersTurn(t *testing.T) {
	lt := newListenerTest(t, Limits{MaxConnections: 10, MaxPendingConnections: 1})
	c1, s1 := lt.connect() // the server's turn: it has not read it yet
	lt.dial()
	accepted, _ := lt.acceptLater()
	select {
	case <-accepted:
		t.Fatal("accepted while the only pending connection was the server's turn")
	case <-time.After(5 * lt.l.minWait):
	}
	start := time.Now()
	serverWaits(s1) // now the server waits for its caller
	select {
	case <-accepted:
		if waited := time.Since(start); waited < lt.l.minWait {
			t.Errorf("accepted %v after the other started to wait, want at least %v", waited, lt.l.minWait)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not accepted once the pending connection waited for its caller")
	}
	if !closedByServer(t, c1) {
		t.Error("the waiting connection was not evicted")
	}
}

// However many places are free, the server computes at most maxTurn
// handshakes at once: a newer connection waits in the kernel's queue
// until one of those waits for its caller (or ends).
func TestAcceptWaitsWhileTheServerHasHandshakesEnough(t *testing.T) {
	lt := newListenerTest(t, Limits{MaxConnections: 10})
	lt.l.maxTurn = 1
	_, s1 := lt.connect() // the server's turn
	lt.dial()
	accepted, _ := lt.acceptLater()
	select {
	case <-accepted:
		t.Fatal("accepted while the server had its handshakes to compute")
	case <-time.After(100 * time.Millisecond):
	}
	serverWaits(s1)
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("not accepted once the other waited for its caller")
	}
	if have := lt.metrics.evicted.get(""); have != 0 {
		t.Errorf("evicted %v: none was needed", have)
	}
}

func TestPendingConnectionsTimeOut(t *testing.T) {
	lt := newListenerTest(t, Limits{FirstByteTimeout: 50 * time.Millisecond, HandshakeTimeout: 300 * time.Millisecond})
	silent, s1 := lt.connect()
	w1 := serverWaits(s1)
	talker, s2 := lt.connect()
	if _, err := talker.Write([]byte{22}); err != nil {
		t.Fatal(err)
	}
	<-serverWaits(s2) // reads the byte
	serverWaits(s2)
	quick, s3 := lt.connect()
	if _, err := quick.Write([]byte{22}); err != nil {
		t.Fatal(err)
	}
	<-serverWaits(s3)
	_ = s3.SetDeadline(time.Time{}) // established in time

	start := time.Now()
	if !closedByServer(t, silent) {
		t.Fatal("a connection that sent nothing was not closed")
	}
	<-w1
	if took := time.Since(start); took > 250*time.Millisecond {
		t.Errorf("the silent connection was closed after %v, want about FirstByteTimeout (50ms)", took)
	}
	if !stillOpen(t, talker) {
		t.Error("a connection that spoke was closed at FirstByteTimeout")
	}
	if !closedByServer(t, talker) {
		t.Error("a connection that did not finish within HandshakeTimeout was not closed")
	}
	if !stillOpen(t, quick) {
		t.Error("an established connection was closed")
	}
	for stage, want := range map[string]float64{"stage=first_byte": 1, "stage=handshake": 1} {
		if have := lt.metrics.timedOut.get(stage); want != have {
			t.Errorf("timed out, %s: want %v, have %v", stage, want, have)
		}
	}
	if open, waiting, turn := lt.state(); open != 1 || waiting+turn != 0 {
		t.Errorf("want the established connection alone open, have %d open, %d waiting, %d the server's turn", open, waiting, turn)
	}
}

func TestClosingTheListenerClosesPendingAndWakesAccept(t *testing.T) {
	lt := newListenerTest(t, Limits{MaxConnections: 10, MaxPendingConnections: 1})
	estClient, est := lt.connect()
	_ = est.SetDeadline(time.Time{})
	pendingClient, _ := lt.connect()
	lt.dial()
	_, acceptErr := lt.acceptLater()
	time.Sleep(50 * time.Millisecond) // Accept waits: the pending one is the server's turn
	lt.l.Close()
	select {
	case err := <-acceptErr:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: want net.ErrClosed, have %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still waits after Close")
	}
	if !closedByServer(t, pendingClient) {
		t.Error("a pending connection outlived its listener")
	}
	if !stillOpen(t, estClient) {
		t.Error("an established connection was closed with the listener: the server owns it")
	}
}

func TestPressureIsLoggedWhenItStartsAndWhenItEnds(t *testing.T) {
	lt := newListenerTest(t, Limits{MaxConnections: 10, MaxPendingConnections: 1})
	lt.l.quiet = 100 * time.Millisecond
	_, s := lt.connect()
	for range 3 {
		serverWaits(s)
		time.Sleep(2 * lt.l.minWait)
		_, s = lt.connect()
	}
	if want, have := 3.0, lt.metrics.evicted.get(""); want != have {
		t.Fatalf("evicted: want %v, have %v", want, have)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(lt.log.Lines("connection pressure over")) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if want, have := 1, len(lt.log.Lines("at the connection limit")); want != have {
		t.Errorf("lines on the start: want %d, have %d:\n%s", want, have, lt.log)
	}
	if end := lt.log.Lines("connection pressure over", "evicted=3", "refused=0"); len(end) != 1 {
		t.Errorf("want one line on the end, with the counts:\n%s", lt.log)
	}
}

// grpc.Server tells the listener when a connection is established (it
// clears the deadline of the connection's setup): over mutual TLS, once
// the client's certificate is verified and the preface read. A caller
// whose certificate is refused never is, and gives its place back.
func TestGRPCServerEstablishesConnections(t *testing.T) {
	ca, err := pki.NewCA(t.TempDir(), "ca")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.LoopbackServer("server")
	if err != nil {
		t.Fatal(err)
	}
	caller, err := ca.Issue(pki.Leaf{Name: "caller", Usage: pki.Client})
	if err != nil {
		t.Fatal(err)
	}
	tlsOpts, _, err := TLS{CertFile: srv.CertFile, KeyFile: srv.KeyFile, ClientCAFile: ca.File}.ServerOptions()
	if err != nil {
		t.Fatal(err)
	}
	limits := Limits{MaxConnections: 4}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := limits.Listener(lis).(*connListener)
	s := grpc.NewServer(append(limits.ServerOptions(), tlsOpts...)...)
	s.RegisterService(echoDesc(func(_ context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) { return in, nil }), nil)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	state := func() (open, pending int) {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.open, l.waiting.n + l.turn.n
	}

	refusedCreds := credentials.NewTLS(ca.ClientConfig(nil))
	refused, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(refusedCreds))
	if err != nil {
		t.Fatal(err)
	}
	defer refused.Close()
	if err := echo(context.Background(), refused, nil); err == nil {
		t.Fatal("a caller without a certificate: want an error")
	}
	eventually(t, "the refused caller's place given back", func() bool { open, _ := state(); return open == 0 })

	good, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(tlsfiles.ClientCreds(mustCerts(t, caller, ca), "")))
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	if err := echo(context.Background(), good, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if open, pending := state(); open != 1 || pending != 0 {
		t.Errorf("after a call: want 1 open, established; have %d open, %d pending", open, pending)
	}
}

func mustCerts(t *testing.T, leaf *pki.Issued, ca *pki.CA) *tlsfiles.Certs {
	t.Helper()
	c, err := tlsfiles.LoadCerts(leaf.CertFile, leaf.KeyFile, ca.File)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

package grpcserver

import (
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/go-kit/kit/metrics"
	"github.com/go-kit/log"
)

// Connection admission: which connections a server keeps when callers
// open more than MaxConnections.
//
// A connection is pending from its accept until gRPC has set up its
// transport on it (the TLS handshake done, the client's certificate
// verified under mutual TLS, and the HTTP/2 preface read), and
// established from then on. grpc.Server tells: it bounds that setup with a
// deadline on the connection (ConnectionTimeout, our HandshakeTimeout) and
// clears the deadline once the transport is up (SetDeadline of the zero
// time); a connection it gives up on is closed first.
//
// A caller needs no certificate to hold pending connections, only sockets;
// so pending connections may take at most MaxPendingConnections of the
// places, one is evicted when a newer one needs its place, and one that
// sends nothing for FirstByteTimeout is closed. An established connection
// is never evicted.
//
// Which pending connection is evicted: the one that has waited longest for
// its caller, once that is minCallerWait. A pending connection waits for
// its caller while the server is blocked reading it (for a ClientHello,
// for the client's answer to the server's handshake flight, for the
// preface) or writing to it, and it is the server's turn otherwise (the connection not yet picked up, the
// server computing its answer, or the caller's answer received and not yet
// read). A caller that stalls, at any step, waits from then on; a live one
// answers within a round trip. So under a flood of stalled connections a
// live caller's is never the one that has waited longest, however many
// newer ones the flood opens and however long the server, busy with the
// flood, takes over its own steps.
//
// When every pending connection is the server's turn, none is evicted: the
// next accept waits until one waits for its caller, is established or
// closes. And however many places are free, at most maxTurn pending
// connections are the server's turn at once. So the server takes
// connections as fast as it can handshake them, and no faster: a flood
// neither makes it drop the handshakes it has started nor queues hundreds
// of handshakes to compute ahead of the calls of established connections;
// the callers it has not taken yet wait in the kernel's accept queue.

// connListener is Limits.Listener's listener.
type connListener struct {
	net.Listener

	// Immutable.
	max, maxPending      int
	firstByte, handshake time.Duration
	logger               log.Logger
	refusedN, evictedN   func()        // count a refusal, an eviction
	firstByteN, timeoutN func()        // count a timeout: first byte, handshake
	minWait, quiet       time.Duration // minCallerWait, pressureQuiet (tests shorten them)
	maxTurn              int           // at most so many pending connections the server's turn at once: 2 per CPU

	mu sync.Mutex // guards the fields below and every conn's guarded ones
	// changed is broadcast when a place may have come free or a pending
	// connection has started to wait: what a full admit waits for.
	changed sync.Cond
	open    int // connections counted against max: pending and established
	// waiting are the pending connections waiting for their callers, by
	// when they started to, and turn the others, by when they were
	// accepted or stopped waiting: oldest first.
	waiting, turn connList
	closed        bool
	pressure      *pressure // nil outside an episode of evictions or refusals
}

func newConnListener(lis net.Listener, l Limits) *connListener {
	cl := &connListener{
		Listener:   lis,
		max:        l.MaxConnections,
		maxPending: l.MaxPendingConnections,
		firstByte:  l.FirstByteTimeout,
		handshake:  l.HandshakeTimeout,
		logger:     l.Logger,
		minWait:    minCallerWait,
		quiet:      pressureQuiet,
		maxTurn:    max(4, 2*runtime.GOMAXPROCS(0)),
	}
	cl.changed.L = &cl.mu
	if cl.logger == nil {
		cl.logger = log.NewNopLogger()
	}
	m := l.Metrics.resolved()
	cl.refusedN, cl.evictedN = count(m.ConnsRefused), count(m.ConnsEvicted)
	cl.firstByteN, cl.timeoutN = func() {}, func() {}
	if m.ConnsTimedOut != nil {
		cl.firstByteN = count(m.ConnsTimedOut.With("stage", "first_byte"))
		cl.timeoutN = count(m.ConnsTimedOut.With("stage", "handshake"))
	}
	return cl
}

// count returns a function that adds 1 to c, if any.
func count(c metrics.Counter) func() {
	if c == nil {
		return func() {}
	}
	return func() { c.Add(1) }
}

func (l *connListener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		c, err := l.admit(nc)
		if err != nil {
			return nil, err
		}
		if c != nil {
			return c, nil
		}
	}
}

// admit counts nc in and returns it. When nc needs a place, the pending
// connection that has waited longest for its caller gives it up; when
// none waits, admit waits for one (or a free place). It closes nc and
// returns nil when every place is held by an established connection, and
// net.ErrClosed once the listener is closed.
func (l *connListener) admit(nc net.Conn) (*conn, error) {
	l.mu.Lock()
	var victim *conn
	for {
		if l.closed {
			l.mu.Unlock()
			nc.Close()
			return nil, net.ErrClosed
		}
		var wake *time.Timer
		if l.turn.n < l.maxTurn { // else the server has handshakes enough to compute
			if !l.full() {
				break
			}
			if l.waiting.n+l.turn.n == 0 { // every place established
				l.mu.Unlock()
				l.shed(nc, false)
				return nil, nil
			}
			v, wait := l.victim(time.Now())
			if v != nil {
				victim = v
				l.drop(victim)
				break
			}
			if wait > 0 {
				wake = time.AfterFunc(wait, l.broadcast)
			}
		}
		l.changed.Wait()
		if wake != nil {
			wake.Stop()
		}
	}
	c := &conn{Conn: nc, l: l, accepted: time.Now()}
	l.open++
	l.turn.pushBack(c)
	c.timer = time.AfterFunc(l.firstByte, func() { l.expire(c) })
	l.mu.Unlock()
	if victim != nil {
		l.shed(victim.Conn, true)
	}
	return c, nil
}

// full reports whether a new connection needs another's place. The caller
// must hold l.mu.
func (l *connListener) full() bool {
	return l.open >= l.max || l.waiting.n+l.turn.n >= l.maxPending
}

// minCallerWait is how long a pending connection must have waited for its
// caller before it may be evicted: far longer than a live caller takes to
// answer (a round trip in a datacenter, and its share of a TLS handshake),
// so that a flood that keeps the server busy cannot make it evict a
// handshake whose caller is about to answer.
const minCallerWait = 250 * time.Millisecond

// victim is the pending connection that has waited longest for its
// caller, once that is minCallerWait, or nil and how long until the one
// that has waited longest will have (0: none waits). A waiting connection
// whose caller has answered (what it sent is still unread: the server,
// busy, has not got back to it yet) is the server's turn: victim moves it
// there. The caller must hold l.mu.
func (l *connListener) victim(now time.Time) (*conn, time.Duration) {
	for c := l.waiting.front(); c != nil; c = l.waiting.front() {
		if !unread(c.Conn) {
			if wait := c.waitSince.Add(l.minWait).Sub(now); wait > 0 {
				return nil, wait
			}
			return c, 0
		}
		l.waiting.remove(c)
		l.turn.pushBack(c)
	}
	return nil, 0
}

func (l *connListener) broadcast() {
	l.mu.Lock()
	l.changed.Broadcast()
	l.mu.Unlock()
}

// drop gives c's place back and takes it off its list. The caller must
// hold l.mu, and close c.Conn.
func (l *connListener) drop(c *conn) {
	if c.state == gone {
		return
	}
	if c.state == pending {
		c.list.remove(c)
		c.timer.Stop()
	}
	c.state = gone
	c.settled.Store(true)
	l.open--
	l.changed.Broadcast()
}

// expire closes c if it is still pending past its deadline: FirstByteTimeout
// while it has sent nothing (bytes received and not yet read count as
// sent), HandshakeTimeout in all.
func (l *connListener) expire(c *conn) {
	l.mu.Lock()
	if c.state != pending {
		l.mu.Unlock()
		return
	}
	if !c.heard && unread(c.Conn) {
		// Its caller has spoken; the server, busy, has not read it yet.
		c.heard = true
	}
	heard := c.heard
	deadline := c.accepted.Add(l.firstByte)
	if heard {
		deadline = c.accepted.Add(l.handshake)
	}
	if wait := time.Until(deadline); wait > 0 { // heard meanwhile: a later deadline
		c.timer.Reset(wait)
		l.mu.Unlock()
		return
	}
	l.drop(c)
	l.mu.Unlock()
	c.Conn.Close()
	if heard {
		l.timeoutN()
	} else {
		l.firstByteN()
	}
}

// Close closes the listener and the pending connections: nothing will
// serve them.
func (l *connListener) Close() error {
	l.mu.Lock()
	l.closed = true
	var pending []*conn
	for _, list := range []*connList{&l.waiting, &l.turn} {
		for c := list.front(); c != nil; c = list.front() {
			l.drop(c)
			pending = append(pending, c)
		}
	}
	if p := l.pressure; p != nil {
		p.timer.Stop()
		l.pressure = nil
	}
	l.changed.Broadcast()
	l.mu.Unlock()
	for _, c := range pending {
		c.Conn.Close()
	}
	return l.Listener.Close()
}

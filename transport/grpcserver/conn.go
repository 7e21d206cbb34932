package grpcserver

import (
	"net"
	"sync/atomic"
	"time"
)

// conn is a connection of a connListener.
type conn struct {
	net.Conn
	l        *connListener // immutable
	accepted time.Time     // immutable
	settled  atomic.Bool   // no longer pending; set under l.mu

	// Guarded by l.mu.
	state      connState
	heard      bool      // it has sent a byte
	blocked    int       // Reads and Writes in progress
	waitSince  time.Time // when it started to wait for its caller, if it does
	list       *connList // waiting or turn while pending, else nil
	prev, next *conn
	timer      *time.Timer // the pending connection's deadline
}

type connState uint8

const (
	pending connState = iota
	established
	gone // closed, evicted or timed out: its place given back
)

// block notes that a Read or Write of pending c starts (start) or has
// ended; read tells a Read that returned bytes.
func (l *connListener) block(c *conn, start, read bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.state != pending {
		return
	}
	if read && !c.heard {
		// It has until HandshakeTimeout from its accept to be
		// established.
		c.heard = true
		c.timer.Reset(time.Until(c.accepted.Add(l.handshake)))
	}
	if start {
		if c.blocked++; c.blocked == 1 && c.list == &l.turn {
			c.waitSince = time.Now()
			l.turn.remove(c)
			l.waiting.pushBack(c)
			l.changed.Broadcast()
		}
		return
	}
	if c.blocked--; c.blocked == 0 {
		c.list.remove(c)
		l.turn.pushBack(c)
	}
}

// establish marks c established: it keeps its place until it closes.
func (l *connListener) establish(c *conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.state != pending {
		return
	}
	c.list.remove(c)
	c.timer.Stop()
	c.state = established
	c.settled.Store(true)
	l.changed.Broadcast()
}

func (c *conn) Read(b []byte) (int, error) {
	if c.settled.Load() {
		return c.Conn.Read(b)
	}
	c.l.block(c, true, false)
	n, err := c.Conn.Read(b)
	c.l.block(c, false, n > 0)
	return n, err
}

func (c *conn) Write(b []byte) (int, error) {
	if c.settled.Load() {
		return c.Conn.Write(b)
	}
	c.l.block(c, true, false)
	n, err := c.Conn.Write(b)
	c.l.block(c, false, false)
	return n, err
}

// SetDeadline is the connection's, and grpc.Server's word that the
// connection is established when it clears the deadline of its setup.
func (c *conn) SetDeadline(t time.Time) error {
	if t.IsZero() {
		c.l.establish(c)
	}
	return c.Conn.SetDeadline(t)
}

func (c *conn) Close() error {
	c.l.mu.Lock()
	c.l.drop(c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// connList is a list of pending connections, oldest first.
type connList struct {
	head, tail *conn
	n          int
}

func (cl *connList) front() *conn { return cl.head }

func (cl *connList) pushBack(c *conn) {
	c.list, c.prev, c.next = cl, cl.tail, nil
	if cl.tail != nil {
		cl.tail.next = c
	} else {
		cl.head = c
	}
	cl.tail = c
	cl.n++
}

func (cl *connList) remove(c *conn) {
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		cl.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		cl.tail = c.prev
	}
	c.list, c.prev, c.next = nil, nil, nil
	cl.n--
}

package client

import (
	"io"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
)

// graceCloser closes the connections of instances that left discovery
// after a grace period, so that calls in flight on them finish, and closes
// those still waiting at once when its Endpointer closes. It has a lock of
// its own: a timer that fires takes nothing of the Endpointer's but what
// its done asks.
type graceCloser struct {
	logger  log.Logger
	mu      sync.Mutex
	pending map[*time.Timer]io.Closer
}

func newGraceCloser(logger log.Logger) *graceCloser {
	return &graceCloser{logger: logger, pending: map[*time.Timer]io.Closer{}}
}

// after closes c, the connection of inst, after d, and returns the timer
// that will; done, when not nil, is called with it first. Whoever takes a
// connection out of pending closes it: the timer's function, or closeAll
// if it gets there first; cancel takes it back.
func (g *graceCloser) after(inst string, c io.Closer, d time.Duration, done func(*time.Timer)) *time.Timer {
	g.mu.Lock()
	defer g.mu.Unlock()
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		g.mu.Lock() // after after's: t is set
		_, pending := g.pending[t]
		delete(g.pending, t)
		g.mu.Unlock()
		if !pending {
			return
		}
		if done != nil {
			done(t)
		}
		g.close(inst, c)
	})
	g.pending[t] = c
	return t
}

// cancel takes the connection t would close back, and reports whether it
// did: false once t has fired.
func (g *graceCloser) cancel(t *time.Timer) bool {
	if !t.Stop() {
		return false
	}
	g.mu.Lock()
	delete(g.pending, t)
	g.mu.Unlock()
	return true
}

// closeAll closes every connection still waiting, at once.
func (g *graceCloser) closeAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for t, c := range g.pending {
		t.Stop()
		g.close("", c)
	}
	clear(g.pending)
}

func (g *graceCloser) close(inst string, c io.Closer) {
	if err := c.Close(); err != nil {
		_ = level.Warn(g.logger).Log("msg", "closing endpoint", "instance", inst, "err", err)
	}
}

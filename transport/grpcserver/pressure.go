package grpcserver

import (
	"net"
	"time"

	"github.com/go-kit/log/level"
)

// pressureQuiet is how long after the last eviction or refusal an
// episode of connection pressure is over, and logged as such.
const pressureQuiet = 10 * time.Second

// pressure is an episode of evictions and refusals: it starts with the
// first and ends pressureQuiet after the last.
type pressure struct {
	start, last      time.Time
	evicted, refused int
	timer            *time.Timer
}

// shed closes nc, evicted or refused, counts it, and counts it into the
// episode of pressure, which it logs when it starts one. The caller must
// not hold l.mu.
func (l *connListener) shed(nc net.Conn, evicted bool) {
	nc.Close()
	now := time.Now()
	l.mu.Lock()
	p, start := l.pressure, false
	if p == nil && !l.closed {
		p = &pressure{start: now}
		p.timer = time.AfterFunc(l.quiet, l.quieten)
		l.pressure, start = p, true
	}
	if p != nil {
		p.last = now
		if evicted {
			p.evicted++
		} else {
			p.refused++
		}
	}
	l.mu.Unlock()
	if evicted {
		l.evictedN()
	} else {
		l.refusedN()
	}
	if start {
		_ = level.Warn(l.logger).Log("msg", "at the connection limit: evicting the connections not yet established (TLS handshake or HTTP/2 preface not done) that have waited longest for their callers; refusing new ones while every place is established",
			"max_connections", l.max, "max_pending_connections", l.maxPending)
	}
}

// quieten ends the episode of pressure once none has come for l.quiet.
func (l *connListener) quieten() {
	l.mu.Lock()
	p := l.pressure
	if p == nil {
		l.mu.Unlock()
		return
	}
	if wait := time.Until(p.last.Add(l.quiet)); wait > 0 {
		p.timer.Reset(wait)
		l.mu.Unlock()
		return
	}
	l.pressure = nil
	l.mu.Unlock()
	_ = level.Info(l.logger).Log("msg", "connection pressure over", "evicted", p.evicted, "refused", p.refused,
		"lasted", p.last.Sub(p.start).Round(time.Millisecond))
}

package main

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-kit/log"
)

// discoveryWatch passes the load's client's log on and notes the client's
// failed Consul queries. A client whose token was deleted under it fails
// no call while the instances stay where they were (the soak starts them
// again on their addresses), so its calls alone would hide that it no
// longer sees the catalog: a later fault that moves instances, or empties
// the catalog, would then test nothing. It knows the failures by the
// messages the client logs for them ("consul query failed").
type discoveryWatch struct {
	next log.Logger

	mu       sync.Mutex
	failures int64
	refusals int64 // of failures, those where Consul refused the token
	lastAt   time.Time
	lastErr  string
}

var _ log.Logger = (*discoveryWatch)(nil)

// Log implements log.Logger.
func (d *discoveryWatch) Log(keyvals ...any) error {
	var msg, errText string
	for i := 0; i+1 < len(keyvals); i += 2 {
		switch keyvals[i] {
		case "msg":
			msg = fmt.Sprint(keyvals[i+1])
		case "err":
			errText = fmt.Sprint(keyvals[i+1])
		}
	}
	if strings.Contains(msg, "consul query failed") {
		d.mu.Lock()
		d.failures++
		if refused(errText) {
			d.refusals++
		}
		d.lastAt, d.lastErr = time.Now(), errText
		d.mu.Unlock()
	}
	return d.next.Log(keyvals...)
}

// state returns the failures so far, the refusals among them, and the
// last one's time and error.
func (d *discoveryWatch) state() (failures, refusals int64, lastAt time.Time, lastErr string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.failures, d.refusals, d.lastAt, d.lastErr
}

// refused reports whether err says that Consul refused the client's token.
func refused(err string) bool {
	return strings.Contains(err, "permission denied") || strings.Contains(err, "ACL not found")
}

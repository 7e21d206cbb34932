// Package logbuf is a logger's output kept in memory, safe to read while
// the logger writes: what tests check log lines with.
package logbuf

import (
	"strings"
	"sync"
)

// Buffer is an io.Writer that keeps what is written; its zero value is
// ready to use.
type Buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

// Write implements io.Writer.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String is everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Lines returns the lines written so far that hold every one of subs.
func (b *Buffer) Lines(subs ...string) []string {
	var found []string
	for _, line := range strings.Split(b.String(), "\n") {
		all := line != ""
		for _, s := range subs {
			all = all && strings.Contains(line, s)
		}
		if all {
			found = append(found, line)
		}
	}
	return found
}

// Has reports whether a line written so far holds every one of subs.
func (b *Buffer) Has(subs ...string) bool { return len(b.Lines(subs...)) > 0 }

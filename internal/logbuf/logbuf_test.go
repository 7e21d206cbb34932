package logbuf

import (
	"fmt"
	"sync"
	"testing"
)

func TestLinesAndHas(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fmt.Fprintf(&b, "level=info n=%d msg=hello\n", i)
		}()
	}
	wg.Wait()
	fmt.Fprintln(&b, "level=error msg=hello")
	if have := len(b.Lines("msg=hello")); have != 11 {
		t.Errorf("Lines(msg=hello): %d, want 11", have)
	}
	if have := len(b.Lines("level=error", "hello")); have != 1 {
		t.Errorf("Lines(level=error, hello): %d, want 1", have)
	}
	if b.Has("level=warn") || !b.Has("n=3") {
		t.Errorf("Has: wrong answers over %q", b.String())
	}
}

package tlsfiles

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestStamp(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	write := func(path, content string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now().Add(-time.Hour)
	write(a, "one", t0)
	write(b, "two", t0)
	first := Stamp(a, "", b)
	if want, have := first, Stamp(a, b); want != have {
		t.Errorf("an empty name is skipped: want %q, have %q", want, have)
	}
	write(a, "ONE", t0) // same size, same time: unseen
	if want, have := first, Stamp(a, b); want != have {
		t.Errorf("a rewrite that keeps the size and time: want %q, have %q", want, have)
	}
	for _, step := range []struct {
		name   string
		change func()
	}{
		{"a new time", func() { write(a, "ONE", t0.Add(time.Second)) }},
		{"a new size", func() { write(b, "three", t0) }},
		{"a rename over it", func() { write(a+".new", "new", t0.Add(time.Minute)); _ = os.Rename(a+".new", a) }},
		{"removed", func() { _ = os.Remove(b) }},
		{"back", func() { write(b, "two", t0) }},
	} {
		before := Stamp(a, b)
		step.change()
		if after := Stamp(a, b); after == before {
			t.Errorf("%s: the stamp stayed %q", step.name, after)
		}
	}
}

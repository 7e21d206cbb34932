package proc

import (
	"os"
	"testing"
)

func TestMemory(t *testing.T) {
	rss, err := Memory(os.Getpid(), "VmRSS")
	if err != nil || rss <= 0 {
		t.Fatalf("VmRSS: %d, %v", rss, err)
	}
	peak, err := Memory(os.Getpid(), "VmHWM")
	if err != nil || peak < rss {
		t.Fatalf("VmHWM %d, %v: want at least VmRSS %d", peak, err, rss)
	}
	if _, err := Memory(os.Getpid(), "NoSuchField"); err == nil {
		t.Error("a missing field: no error")
	}
}

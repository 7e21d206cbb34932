package sd

import (
	"testing"

	"github.com/trimkit/trimkit/internal/consulname"
)

// Read.validate and client.Config's check share consulname.ValidRead: its
// mode names must be Read's.
func TestReadModesAreValidReads(t *testing.T) {
	for have, want := range map[string]string{ReadStale: consulname.ReadStale, ReadLeader: consulname.ReadLeader, ReadCache: consulname.ReadCache} {
		if have != want {
			t.Errorf("read mode %q: consulname has %q", have, want)
		}
		if err := (Read{Mode: have}).validate(); err != nil {
			t.Errorf("read mode %q: %v", have, err)
		}
	}
	if err := (Read{Mode: "fast"}).validate(); err == nil {
		t.Error(`read mode "fast": want an error`)
	}
}

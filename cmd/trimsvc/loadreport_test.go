package main

import (
	"encoding/json"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/internal/consulname"
	"github.com/trimkit/trimkit/internal/testenv"
)

// waitKey polls key in c until present is what it is, and returns the
// pair and how long that took.
func waitKey(t *testing.T, c *api.Client, key string, present bool, within time.Duration) (*api.KVPair, time.Duration) {
	t.Helper()
	var pair *api.KVPair
	took := eventually(t, within, fmt.Sprintf("key %s present %v", key, present), func() (bool, error) {
		var err error
		pair, _, err = c.KV().Get(key, nil)
		return err == nil && (pair != nil) == present, err
	})
	return pair, took
}

func TestLoadReportsLiveAndDieWithTheInstance(t *testing.T) {
	// With ACLs on and the least-privilege token: its policy must be
	// enough for reports too.
	s := testenv.SecureConsul(t)
	c := s.API()
	flags := append(s.ConsulTLSFlags(), "-consul-token-file", s.TrimsvcTokenFile, "-load-report-interval", "200ms")

	in := startInstance(t, s.URL(), flags...)
	s.WaitPassing("trimsvc", in.ID)
	key := consulname.LoadKey("trimsvc", in.ID)
	pair, _ := waitKey(t, c, key, true, 10*time.Second)
	var raw map[string]any
	if err := json.Unmarshal(pair.Value, &raw); err != nil {
		t.Fatalf("report %q: %v", pair.Value, err)
	}
	for _, k := range []string{"load", "inflight", "rps", "ts", "addr", "interval_ms"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("report lacks %q: %s", k, pair.Value)
		}
	}
	if raw["addr"] != in.Addr || pair.Session == "" {
		t.Errorf("report %s, session %q: want addr %s under a session", pair.Value, pair.Session, in.Addr)
	}
	session, _, err := c.Session().Info(pair.Session, nil)
	if err != nil || session == nil || session.Behavior != api.SessionBehaviorDelete || session.TTL == "" {
		t.Fatalf("session %+v (%v): want a TTL and the delete behaviour", session, err)
	}

	// SIGTERM: the report goes with the registration, session and all.
	if err := in.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, in.Process, 15*time.Second); code != 0 {
		t.Errorf("exit after SIGTERM: %d", code)
	}
	waitKey(t, c, key, false, time.Second)
	if info, _, _ := c.Session().Info(pair.Session, nil); info != nil {
		t.Error("the session outlived the instance")
	}

	// SIGKILL: nothing deletes the report, but its session ends, at the
	// latest when its TTL does, here sooner: it is bound to the instance's
	// check (interval 1s, timeout 1s).
	in = startInstance(t, s.URL(), flags...)
	s.WaitPassing("trimsvc", in.ID)
	key = consulname.LoadKey("trimsvc", in.ID)
	waitKey(t, c, key, true, 10*time.Second)
	if err := in.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, gone := waitKey(t, c, key, false, consulname.LoadTTL(200*time.Millisecond))
	t.Logf("report of a SIGKILLed instance gone %v later (session TTL %v)", gone.Round(time.Millisecond), consulname.LoadTTL(200*time.Millisecond))
}

package sd_test

import (
	"sync"
	"testing"

	"github.com/go-kit/log"
	"go.uber.org/goleak"

	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/sd"
)

func TestInstancersShareAWatch(t *testing.T) {
	agent := testenv.Consul(t)
	c := agent.API()
	reg := validRegistration()
	if err := c.Agent().ServiceRegister(apiRegistration{reg.ID, reg.Name, reg.Tags, reg.Address, reg.Port}.toAPI()); err != nil {
		t.Fatal(err)
	}
	leaks := goleak.IgnoreCurrent()
	cfg := sd.ConsulConfig{Address: agent.HTTPAddr}
	var pool sd.Instancers

	// Concurrent first users of one watch make one.
	shared := make([]*sd.Instancer, 8)
	var wg sync.WaitGroup
	for i := range shared {
		wg.Go(func() {
			s, err := pool.Instancer(cfg, log.NewNopLogger(), "trimsvc", []string{"a"}, true, sd.Read{})
			if err != nil {
				t.Error(err)
				return
			}
			shared[i] = s
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, s := range shared[1:] {
		if !sd.SameWatch(s, shared[0]) {
			t.Fatal("the users of one service, tags and agent have Instancers of their own")
		}
	}
	if st := shared[0].State(); len(st.Instances) != 1 || st.Err != nil {
		t.Fatalf("shared watch state: %+v", st)
	}
	other, err := pool.Instancer(cfg, log.NewNopLogger(), "trimsvc", nil, true, sd.Read{Mode: sd.ReadLeader})
	if err != nil {
		t.Fatal(err)
	}
	if sd.SameWatch(other, shared[0]) || pool.Len() != 2 {
		t.Fatalf("another read mode shares the watch (%d watches)", pool.Len())
	}
	// A configuration that cannot be used starts nothing.
	if _, err := pool.Instancer(sd.ConsulConfig{Token: "a", TokenFile: "b"}, log.NewNopLogger(), "trimsvc", nil, true, sd.Read{}); err == nil || pool.Len() != 2 {
		t.Fatalf("a token and a token file: %v, %d watches", err, pool.Len())
	}

	for i, s := range shared {
		s.Stop()
		s.Stop() // twice lets go once
		if want := map[bool]int{true: 1, false: 2}[i == len(shared)-1]; pool.Len() != want {
			t.Fatalf("after %d of %d Stops: %d watches, want %d", i+1, len(shared), pool.Len(), want)
		}
	}
	other.Stop()
	if pool.Len() != 0 {
		t.Fatalf("all stopped: %d watches", pool.Len())
	}
	goleak.VerifyNone(t, leaks)
}

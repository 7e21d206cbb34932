package sd_test

import (
	"testing"
	"time"

	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/log"

	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/sd"
)

func TestInstancerFollowsConsul(t *testing.T) {
	agent := testenv.Consul(t)
	c := agent.API()
	reg := validRegistration()
	// A TTL-less registration without a check is passing at once.
	if err := c.Agent().ServiceRegister(apiRegistration{reg.ID, reg.Name, reg.Tags, reg.Address, reg.Port}.toAPI()); err != nil {
		t.Fatal(err)
	}

	s, err := sd.NewInstancer(sd.NewClient(c), log.NewNopLogger(), "trimsvc", []string{"a"}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if want, have := []string{"127.0.0.1:9999"}, s.State().Instances; len(have) != 1 || have[0] != want[0] {
		t.Fatalf("first state: want %v, have %v", want, have)
	}
	events := make(chan kitsd.Event, 10)
	s.Register(events)
	if ev := <-events; len(ev.Instances) != 1 {
		t.Fatalf("Register: want the current state at once, have %+v", ev)
	}

	// Deregistration arrives through the blocking query.
	if err := c.Agent().ServiceDeregisterOpts(reg.ID, nil); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, events); len(ev.Instances) != 0 || ev.Err != nil {
		t.Errorf("after deregistration: %+v", ev)
	}

	// Consul gone: an error event, the last instances kept in State.
	if err := c.Agent().ServiceRegister(apiRegistration{"other", "trimsvc", []string{"a"}, "127.0.0.1", 7777}.toAPI()); err != nil {
		t.Fatal(err)
	}
	nextEvent(t, events)
	if err := agent.Stop(); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, events); ev.Err == nil {
		t.Errorf("want an error event, have %+v", ev)
	}
	if st := s.State(); st.Err == nil || len(st.Instances) != 1 {
		t.Errorf("state with consul down: %+v", st)
	}
}

// Stop cancels a real blocking query, which could otherwise wait 5 minutes.
func TestInstancerStopsRealBlockingQuery(t *testing.T) {
	agent := testenv.Consul(t)
	s, err := sd.NewInstancer(sd.NewClient(agent.API()), log.NewNopLogger(), "trimsvc", nil, true)
	if err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() { s.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not return within 10s")
	}
}

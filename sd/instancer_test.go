package sd_test

import (
	"testing"
	"time"

	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/log"

	"github.com/trimkit/trimkit/internal/consultest"
	"github.com/trimkit/trimkit/sd"
)

func TestInstancerFollowsConsul(t *testing.T) {
	agent := consultest.Start(t)
	c := newClient(t, agent.HTTPAddr)
	reg := validRegistration()
	// A TTL-less registration without a check is passing at once.
	if err := c.Agent().ServiceRegister(apiRegistration{reg.ID, reg.Name, reg.Tags, reg.Address, reg.Port}.toAPI()); err != nil {
		t.Fatal(err)
	}

	s := sd.NewInstancer(c, log.NewNopLogger(), "trimsvc", []string{"a"}, true)
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
	select {
	case ev := <-events:
		if len(ev.Instances) != 0 || ev.Err != nil {
			t.Errorf("after deregistration: %+v", ev)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no event within 3s of deregistration")
	}

	// Consul gone: an error event, the last instances kept in State.
	if err := c.Agent().ServiceRegister(apiRegistration{"other", "trimsvc", []string{"a"}, "127.0.0.1", 7777}.toAPI()); err != nil {
		t.Fatal(err)
	}
	<-events
	if err := agent.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-events:
		if ev.Err == nil {
			t.Errorf("want an error event, have %+v", ev)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no error event within 3s of consul stopping")
	}
	if st := s.State(); st.Err == nil || len(st.Instances) != 1 {
		t.Errorf("state with consul down: %+v", st)
	}
}

func TestInstancerStopCancelsBlockingQuery(t *testing.T) {
	agent := consultest.Start(t)
	s := sd.NewInstancer(newClient(t, agent.HTTPAddr), log.NewNopLogger(), "trimsvc", nil, true)
	time.Sleep(200 * time.Millisecond) // in a blocking query that could wait 5 minutes
	start := time.Now()
	s.Stop()
	if took := time.Since(start); took > time.Second {
		t.Errorf("Stop took %v", took)
	}
	s.Stop() // twice is fine
}

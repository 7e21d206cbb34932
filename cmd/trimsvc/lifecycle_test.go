package main

import (
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/internal/testenv"
)

func TestRegistersWhenReady(t *testing.T) {
	agent := testenv.Consul(t)
	c := agent.API()
	inst := startInstance(t, agent.HTTPAddr)

	host, port, err := net.SplitHostPort(inst.Addr)
	if err != nil {
		t.Fatalf("advertised %q: %v", inst.Addr, err)
	}
	if want, have := "127.0.0.1", host; want != have {
		t.Errorf("advertised host: want %s, have %s", want, have)
	}
	if port == "0" {
		t.Fatal("the bound port, not 0, must be advertised")
	}
	if want, have := "trimsvc-127.0.0.1-"+port, inst.ID; want != have {
		t.Errorf("service ID: want %s, have %s", want, have)
	}
	// Passing within one check interval (1s), with slack for the agent.
	agent.WaitPassing("trimsvc", inst.ID)
	entries, _, err := c.Health().Service("trimsvc", "", true, nil)
	if err != nil || len(entries) != 1 {
		t.Fatalf("want 1 passing entry, have %d (%v)", len(entries), err)
	}
	svc := entries[0].Service
	if want, have := inst.Addr, fmt.Sprintf("%s:%d", svc.Address, svc.Port); want != have {
		t.Errorf("registered address: want %s, have %s", want, have)
	}
	var checkType string
	for _, chk := range entries[0].Checks {
		if chk.ServiceID == inst.ID {
			checkType = chk.Type
		}
	}
	if want, have := "grpc", checkType; want != have {
		t.Errorf("check type: want %q, have %q", want, have)
	}
	reg, _, err := c.Agent().Service(inst.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want, have := "trimsvc", reg.Service; want != have {
		t.Errorf("service name: want %q, have %q", want, have)
	}
}

func TestSIGTERMDeregistersDrainsAndExitsZero(t *testing.T) {
	agent := testenv.Consul(t)
	c := agent.API()
	inst := startInstance(t, agent.HTTPAddr, "-drain", "300ms")
	agent.WaitPassing("trimsvc", inst.ID)

	// A request whose body is held back by the client: its stream is open
	// on the server when the signal comes.
	call := newHeldCall(t, inst.Addr)
	if err := inst.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The instance leaves Consul while the process still runs (it waits for
	// the held request).
	eventually(t, 3*time.Second, "instance deregistered", func() (bool, error) {
		services, err := c.Agent().Services()
		_, ok := services[inst.ID]
		return err == nil && !ok, err
	})
	select {
	case <-inst.Exited():
		t.Fatal("process exited before deregistration was observed")
	default:
	}
	// Past the drain, GracefulStop begins (its GOAWAY reaches the held
	// call's connection) and waits for the held request.
	call.waitGoAway(t)
	select {
	case <-inst.Exited():
		t.Fatal("process exited with a request in flight")
	default:
	}
	out, err := call.release()
	if err != nil {
		t.Fatalf("in-flight request failed: %v", err)
	}
	if want, have := "held", out; want != have {
		t.Errorf("want %q, have %q", want, have)
	}
	if want, have := 0, waitExit(t, inst.Process, 10*time.Second); want != have {
		t.Errorf("exit code: want %d, have %d", want, have)
	}
	for _, want := range []string{"deregistered from consul", `signal=terminated`} {
		if _, err := inst.WaitLine(want, time.Second); err != nil {
			t.Error(err)
		}
	}
}

func TestSIGKILLTurnsCheckCritical(t *testing.T) {
	agent := testenv.Consul(t)
	c := agent.API()
	inst := startInstance(t, agent.HTTPAddr) // check interval 1s, timeout 1s
	agent.WaitPassing("trimsvc", inst.ID)
	if err := inst.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	took := eventually(t, 5*time.Second, "check critical", func() (bool, error) {
		checks, err := c.Agent().Checks()
		chk, ok := checks["service:"+inst.ID]
		return ok && chk.Status == api.HealthCritical, err
	})
	t.Logf("check critical %v after SIGKILL (interval 1s + timeout 1s)", took.Round(time.Millisecond))
	// Not deregistered: only the check says it is gone.
	services, err := c.Agent().Services()
	if _, ok := services[inst.ID]; err != nil || !ok {
		t.Errorf("instance should still be registered after SIGKILL (err %v)", err)
	}
}

func TestReregistersAfterAgentRestart(t *testing.T) {
	agent := testenv.Consul(t)
	c := agent.API()
	inst := startInstance(t, agent.HTTPAddr, "-resync-interval", "1s")
	eventually(t, 3*time.Second, "instance registered", func() (bool, error) {
		services, err := c.Agent().Services()
		_, ok := services[inst.ID]
		return ok, err
	})
	agent.Restart()
	// Within the resync interval (1s) plus a few seconds.
	took := eventually(t, 4*time.Second, "instance registered again", func() (bool, error) {
		services, err := c.Agent().Services()
		_, ok := services[inst.ID]
		return ok, err
	})
	t.Logf("registered again %v after the agent restarted", took.Round(time.Millisecond))
	// And its new check passes within a check interval (1s).
	agent.WaitPassing("trimsvc", inst.ID)
	if _, err := inst.WaitLine("registered again", time.Second); err != nil {
		t.Error(err)
	}
}

func TestUnreachableConsulAtStartExitsOne(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing answers there
	start := time.Now()
	inst := startInstance(t, addr, "-register-timeout", "1s")
	code := waitExit(t, inst.Process, 10*time.Second)
	took := time.Since(start)
	if want, have := 1, code; want != have {
		t.Errorf("exit code: want %d, have %d", want, have)
	}
	if took > 4*time.Second {
		t.Errorf("took %v to give up with a 1s register timeout", took)
	}
	line, err := inst.WaitLine("trimsvc: ", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(line, addr) || !strings.Contains(line, "gave up registering") {
		t.Errorf("error %q does not name the consul address %s", line, addr)
	}
}

func TestFailedDeregistrationExitsOne(t *testing.T) {
	agent := testenv.Consul(t)
	c := agent.API()
	inst := startInstance(t, agent.HTTPAddr)
	eventually(t, 3*time.Second, "instance registered", func() (bool, error) {
		services, err := c.Agent().Services()
		_, ok := services[inst.ID]
		return ok, err
	})
	if err := agent.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := inst.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if want, have := 1, waitExit(t, inst.Process, 15*time.Second); want != have {
		t.Errorf("exit code: want %d, have %d", want, have)
	}
	line, err := inst.WaitLine("deregistration failed", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(line, agent.HTTPAddr) {
		t.Errorf("log %q does not name the consul address", line)
	}
}

func TestTwoInstancesTagsAndName(t *testing.T) {
	agent := testenv.Consul(t)
	c := agent.API()
	a := startInstance(t, agent.HTTPAddr, "-service-name", "trimmer", "-tags", "blue, canary")
	b := startInstance(t, agent.HTTPAddr, "-service-name", "trimmer", "-tags", "blue")
	if a.ID == b.ID {
		t.Fatalf("two instances share the ID %s", a.ID)
	}
	agent.WaitPassing("trimmer", a.ID, b.ID)
	entries, _, err := c.Health().Service("trimmer", "canary", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Service.ID != a.ID {
		t.Fatalf("tag canary: want only %s, have %d entries", a.ID, len(entries))
	}
	if want, have := "blue,canary", strings.Join(entries[0].Service.Tags, ","); want != have {
		t.Errorf("tags: want %s, have %s", want, have)
	}
}

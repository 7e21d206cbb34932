package client_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"
	"go.uber.org/goleak"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/internal/pollsd"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport/trim"
)

// TestDNSDiscovery follows a service through the agent's DNS interface
// (SRV records, polled) under load: instances that join are called, one
// that leaves is dropped, no call fails, and Stop leaves nothing running.
func TestDNSDiscovery(t *testing.T) {
	agent, insts := cluster(t, 2, "-tags", "blue")
	dnsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(agent.DNSPort))

	instancer, err := pollsd.NewInstancer(dnsAddr, "trimsvc", []string{"blue"}, 100*time.Millisecond, log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	endpointer := newEndpointer(t, instancer, client.Factory(trim.Endpoints), log.NewNopLogger())
	call, err := client.Retry(client.NewRoundRobin(endpointer), client.RetryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	waitInstances(t, call, 2)
	load := loadgen.Start(context.Background(), call, "d n s", loadgen.Options{Rate: 200})

	joined := testenv.StartTrimsvc(t, bins.Trimsvc(t), agent.HTTPAddr, "-tags", "blue")
	passingAt := agent.WaitPassing("trimsvc", insts[0].ID, insts[1].ID, joined.ID)
	seenAt := firstAnswer(t, call, joined.ID)
	// Untagged instances are not the tagged name's.
	testenv.StartTrimsvc(t, bins.Trimsvc(t), agent.HTTPAddr)

	if err := insts[0].Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	goneAt := waitEndpoints(t, endpointer, 2)
	time.Sleep(300 * time.Millisecond)
	calls, _ := load.Stop()
	if want, have := 0, failures(t, calls); want != have {
		t.Errorf("failures: want %d, have %d of %d", want, have, len(calls))
	}
	per := map[string]int{}
	for _, c := range calls {
		per[c.Instance]++
		if c.Instance == insts[0].ID && c.Start.After(goneAt) {
			t.Errorf("a call started after the instance was dropped reached it")
		}
	}
	if len(per) != 3 {
		t.Errorf("want the 3 tagged instances answering, have %v", per)
	}
	t.Logf("DNS, polled every 100ms: a new instance answered %v after its check passed", seenAt.Sub(passingAt).Round(time.Millisecond))

	endpointer.Close()
	instancer.Stop()
}

// Stop waits for a lookup in flight (go-kit's dnssrv Stop does not): nothing
// is left running, and a second Stop is harmless. The DNS server never
// answers, so a lookup is provably in flight when Stop runs.
func TestDNSInstancerStopLeaksNothing(t *testing.T) {
	mute, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	leaks := goleak.IgnoreCurrent()
	// The first lookup, in the constructor, runs out its time (2s).
	instancer, err := pollsd.NewInstancer(mute.LocalAddr().String(), "trimsvc", nil, 10*time.Millisecond, log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	// Drain the first lookup's queries, then wait for a poll's.
	buf := make([]byte, 512)
	for {
		_ = mute.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, _, err := mute.ReadFrom(buf); err != nil {
			break
		}
	}
	_ = mute.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := mute.ReadFrom(buf); err != nil {
		t.Fatalf("no poll reached the DNS server: %v", err)
	}
	instancer.Stop()
	instancer.Stop()
	goleak.VerifyNone(t, leaks)
	if err := instancer.Err(); err == nil {
		t.Error("a lookup against a server that never answers: want an error")
	}
}

func TestDNSDiscoveryThroughNew(t *testing.T) {
	agent, _ := cluster(t, 2)
	dnsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(agent.DNSPort))
	c := newClient(t, client.Config{Discovery: client.DiscoveryDNS, DNSAddr: dnsAddr})
	waitInstances(t, c.Endpoint(), 2)
	// No instance: the error names the DNS server searched.
	none := newClient(t, client.Config{Discovery: client.DiscoveryDNS, Service: "absent", DNSAddr: dnsAddr})
	_, err := none.TrimSpace(context.Background(), "x")
	if err == nil || !strings.Contains(err.Error(), "consul's DNS interface at "+dnsAddr) {
		t.Errorf("want an error naming the DNS server, have %v", err)
	}
	var nie *sd.NoInstancesError
	if !errors.As(err, &nie) || nie.Service != "absent" || nie.Where != "consul's DNS interface at "+dnsAddr {
		t.Errorf("want an *sd.NoInstancesError for absent at the DNS server, have %#v", err)
	}
	if !errors.Is(err, lb.ErrNoEndpoints) {
		t.Errorf("want errors.Is ErrNoEndpoints: %v", err)
	}
	_, err = trim.NewClient(client.Config{Discovery: client.DiscoveryDNS, Tags: []string{"a", "b"}})
	var fe *client.FieldError
	if !errors.As(err, &fe) || fe.Field != "Tags" {
		t.Errorf("two tags with DNS discovery: want a *FieldError for Tags, have %v", err)
	}
}

package sd_test

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/internal/consulname"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/sd"
)

// An Instancer whose agent does not listen says "Consul could not be
// reached at ADDR", names the dial's failure without the query's URL, and
// gives the hint with the first NoInstancesError only.
func TestInstancerConsulUnreachable(t *testing.T) {
	addr := testenv.ClosedAddr(t)
	c, err := sd.ConsulConfig{Address: addr}.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	s, err := sd.NewInstancer(c, log.NewNopLogger(), "trimsvc", []string{"blue"}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()

	var ue *sd.UnreachableError
	if err := s.State().Err; !errors.As(err, &ue) || !sd.IsUnreachable(err) {
		t.Fatalf("want an *sd.UnreachableError, have %T %v", err, err)
	}
	wantErr := fmt.Sprintf("Consul could not be reached at http://%s: dial tcp %s: connect: connection refused", addr, addr)
	if have := ue.Error(); have != wantErr {
		t.Errorf("\nwant %s\nhave %s", wantErr, have)
	}
	if !errors.Is(ue, syscall.ECONNREFUSED) {
		t.Errorf("%v: want it to unwrap to ECONNREFUSED", ue)
	}

	first, second := s.NoInstances(), s.NoInstances()
	want := wantErr + `; so no instance of service "trimsvc" with tags ["blue"] is known: no endpoints available`
	if have := first.Error(); have != want+"; "+consulname.UnreachableHint {
		t.Errorf("first:\nwant %s; %s\nhave %s", want, consulname.UnreachableHint, have)
	}
	if have := second.Error(); have != want {
		t.Errorf("second, without the hint:\nwant %s\nhave %s", want, have)
	}
	for _, err := range []error{first, second} {
		var nie *sd.NoInstancesError
		if !errors.Is(err, lb.ErrNoEndpoints) || status.Code(err) != codes.Unavailable || !errors.As(err, &nie) || !sd.IsUnreachable(nie.Discovery) {
			t.Errorf("%v: want errors.Is ErrNoEndpoints, Unavailable, and the UnreachableError as Discovery", err)
		}
	}
	if !strings.Contains(consulname.UnreachableHint, "CONSUL_HTTP_ADDR") {
		t.Errorf("hint: %s", consulname.UnreachableHint)
	}
}

// An unreachable agent is not asked whether there is a leader, and the
// watch goes on: subscribers get one event for the failure, not one a
// query.
func TestInstancerUnreachableFromAFake(t *testing.T) {
	f := newFakeConsul()
	s := startInstancer(t, f)
	events := make(chan kitsd.Event, 4)
	s.Register(events)
	nextEvent(t, events)
	refused := &url.Error{Op: "Get", URL: "http://10.1.2.3:8500/v1/health/service/trimsvc?passing=1&stale=&wait=300000ms",
		Err: &net.OpError{Op: "dial", Net: "tcp", Err: &net.AddrError{Err: "connection refused", Addr: "10.1.2.3:8500"}}}
	for range 2 {
		q := f.next(t)
		q.reply <- answer{err: refused}
	}
	ev := nextEvent(t, events)
	// The fake has no address: the URL's.
	if want := "Consul could not be reached at http://10.1.2.3:8500: dial tcp: address 10.1.2.3:8500: connection refused"; ev.Err == nil || ev.Err.Error() != want {
		t.Errorf("\nwant %s\nhave %v", want, ev.Err)
	}
	if len(ev.Instances) != 1 {
		t.Errorf("the instances known last are kept: %+v", ev)
	}
	select {
	case ev := <-events:
		t.Errorf("a second event for the same failure: %+v", ev)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestNoInstancesErrorUnreachableMessages(t *testing.T) {
	ue := &sd.UnreachableError{Addr: "http://a:1", Err: &url.Error{Op: "Get", URL: "http://a:1/v1/health/service/s?passing=1",
		Err: &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "a", IsNotFound: true}}}}
	for _, tc := range []struct {
		err  *sd.NoInstancesError
		want string
	}{
		{&sd.NoInstancesError{Service: "s", Where: "consul at http://a:1", Discovery: ue, Err: lb.ErrNoEndpoints},
			`Consul could not be reached at http://a:1: dial tcp: lookup a: no such host; so no instance of service "s" is known: no endpoints available`},
		{&sd.NoInstancesError{Service: "s", Tags: []string{"x"}, Where: "consul at http://a:1", Discovery: ue, Err: lb.ErrNoEndpoints, Hint: consulname.UnreachableHint},
			`Consul could not be reached at http://a:1: dial tcp: lookup a: no such host; so no instance of service "s" with tags ["x"] is known: no endpoints available; ` + consulname.UnreachableHint},
		{&sd.NoInstancesError{Service: "s", Where: "consul at a:1", Err: lb.ErrNoEndpoints, Hint: "look here"},
			`no passing instance of service "s" in consul at a:1: no endpoints available; look here`},
	} {
		if have := tc.err.Error(); have != tc.want {
			t.Errorf("\nwant %s\nhave %s", tc.want, have)
		}
	}
}

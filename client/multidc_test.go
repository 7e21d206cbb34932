package client_test

import (
	"context"
	"encoding/json"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/serf/coordinate"
	"google.golang.org/grpc"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/internal/proc"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/pb"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
)

// twoDatacenters starts two WAN-federated datacenters, dc1 and dc2, a
// single-server dev agent each, with n trimsvc instances registered in
// each, and waits until they pass.
func twoDatacenters(t *testing.T, n int) (agents []*testenv.Agent, insts [2][]*proc.Trimsvc) {
	t.Helper()
	agents = testenv.Datacenters(t, "dc1", "dc2")
	for dc, a := range agents {
		var ids []string
		for range n {
			inst := testenv.StartTrimsvc(t, bins.Trimsvc(t), a.HTTPAddr)
			insts[dc] = append(insts[dc], inst)
			ids = append(ids, inst.ID)
		}
		a.WaitPassing("trimsvc", ids...)
	}
	return agents, insts
}

// byDC says which datacenter each instance ID is in.
func byDC(insts [2][]*proc.Trimsvc) map[string]int {
	m := map[string]int{}
	for dc, l := range insts {
		for _, i := range l {
			m[i.ID] = dc
		}
	}
	return m
}

// window sums up the calls that started within [from, to): how many,
// how many failed, and the share dc2 answered.
func window(calls []loadgen.Call, dcOf map[string]int, from, to time.Time) (n, failed int, remote float64) {
	r := 0
	for _, c := range calls {
		if c.Start.Before(from) || !c.Start.Before(to) {
			continue
		}
		n++
		switch {
		case c.Err != nil:
			failed++
		case dcOf[c.Instance] == 1:
			r++
		}
	}
	if n > 0 {
		remote = float64(r) / float64(n)
	}
	return n, failed, remote
}

// The service in two datacenters under 200 calls/s, through dc1's agent
// with Datacenters dc1, dc2: every dc1 instance killed, then started
// again, then two of three killed, then dc2's servers. No call fails;
// calls move to dc2 and back, and spill in the share the band rule says.
func TestDatacenterFailover(t *testing.T) {
	agents, insts := twoDatacenters(t, 3)
	dcOf := byDC(insts)
	cfg := client.Config{Consul: sd.ConsulConfig{Address: agents[0].HTTPAddr}, Service: "trimsvc",
		Datacenters: []string{"dc1", "dc2"}, CallConfig: client.CallConfig{Balancer: client.P2CName}}
	// Both faces, 100 calls/s each: the go-kit endpoint and a ClientConn.
	faces := bothFaces(t, cfg)
	for i := range faces {
		waitInstances(t, faces[i].e, 3)
	}
	for i := range faces {
		faces[i].run = loadgen.Start(context.Background(), faces[i].e, "x", loadgen.Options{Rate: 100})
	}
	stopped := false
	defer func() {
		if !stopped {
			for _, f := range faces {
				f.run.Stop()
			}
		}
	}()
	time.Sleep(time.Second)

	// Every dc1 instance killed.
	killed := time.Now()
	for _, inst := range insts[0] {
		if err := inst.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(3 * time.Second)

	// Started again on their addresses (so with their service IDs).
	restarted := time.Now()
	for i, inst := range insts[0] {
		insts[0][i] = testenv.StartTrimsvc(t, bins.Trimsvc(t), agents[0].HTTPAddr, "-grpc-addr", inst.Addr)
	}
	time.Sleep(10 * time.Second)

	// Two of three killed.
	halved := time.Now()
	for _, inst := range insts[0][:2] {
		if err := inst.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(5 * time.Second)

	// dc2's server killed: its watch fails.
	remoteDown := time.Now()
	if err := agents[1].Kill(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second)
	checkDatacentersPage(t, insts[0][2].Addr)
	end := time.Now()
	stopped = true
	for _, f := range faces {
		calls, _ := f.run.Stop()
		t.Run(f.name, func(t *testing.T) { checkFailover(t, calls, dcOf, killed, restarted, halved, remoteDown, end) })
	}
}

// face is one of a client's two faces, the endpoint that calls through
// it, and the load a test runs on it.
type face struct {
	name string
	e    endpoint.Endpoint
	run  *loadgen.Run
}

// bothFaces builds the client cfg says twice, once per face: the go-kit
// endpoint (trim.NewClient) and a ClientConn (client.NewConn).
func bothFaces(t *testing.T, cfg client.Config) []face {
	t.Helper()
	c := newClient(t, cfg)
	conn, err := client.NewConn(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return []face{{name: "go-kit endpoint", e: c.Endpoint()}, {name: "grpc.ClientConn", e: trim.Endpoints(conn)}}
}

// checkFailover checks the calls of TestDatacenterFailover.
func checkFailover(t *testing.T, calls []loadgen.Call, dcOf map[string]int, killed, restarted, halved, remoteDown, end time.Time) {
	if n, failed, _ := window(calls, dcOf, time.Time{}, end); failed > 0 || n < 2000 {
		t.Errorf("%d of %d calls failed, want none (and at least 2000 calls)", failed, n)
		failures(t, calls)
	}
	if _, _, remote := window(calls, dcOf, time.Time{}, killed.Add(-50*time.Millisecond)); remote != 0 {
		t.Errorf("before any fault: %.3f of calls answered in dc2, want none", remote)
	}
	firstRemote := time.Duration(-1)
	for _, c := range calls {
		if !c.Start.Before(killed) && c.Err == nil && dcOf[c.Instance] == 1 {
			firstRemote = c.Start.Add(c.Took).Sub(killed)
			break
		}
	}
	t.Logf("every dc1 instance killed: first dc2 answer %v after", firstRemote)
	if firstRemote < 0 {
		t.Error("no call answered in dc2 after every dc1 instance was killed")
	}
	if _, _, remote := window(calls, dcOf, killed.Add(time.Second), restarted); remote != 1 {
		t.Errorf("from 1s after every dc1 instance was killed: %.3f of calls answered in dc2, want all", remote)
	}
	// Back: the instances pass their first check within a second or so of
	// starting, then ramp back over 5s.
	back := time.Duration(-1)
	for at := restarted; at.Before(halved); at = at.Add(250 * time.Millisecond) {
		if n, _, remote := window(calls, dcOf, at, at.Add(time.Second)); n > 0 && remote == 0 {
			back = at.Sub(restarted)
			break
		}
	}
	t.Logf("dc1 restarted: every call back in dc1 %v after", back)
	if back < 0 || back > 9*time.Second {
		t.Errorf("dc1 restarted: calls all back in dc1 after %v, want within 9s", back)
	}
	want := 1 - 1.4/3
	_, _, spilled := window(calls, dcOf, halved.Add(1500*time.Millisecond), remoteDown)
	t.Logf("two of three dc1 instances killed: %.3f of calls answered in dc2 (the rule: %.3f)", spilled, want)
	if math.Abs(spilled-want) > 0.1 {
		t.Errorf("two of three dc1 instances killed: %.3f of calls answered in dc2, want %.3f ± 0.1", spilled, want)
	}
	_, _, after := window(calls, dcOf, remoteDown, end)
	t.Logf("dc2's server killed: %.3f of calls answered in dc2", after)
	if math.Abs(after-want) > 0.1 {
		t.Errorf("dc2's server killed: %.3f of calls answered in dc2, want as before, %.3f ± 0.1", after, want)
	}
}

// checkDatacentersPage checks what Handler shows of the clients that hold
// addr, a dc1 instance, when one of dc1's three instances is left and
// dc2's servers are down: both datacenters, their shares, dc2's watch
// failing, each instance's datacenter.
func checkDatacentersPage(t *testing.T, addr string) {
	t.Helper()
	srv := httptest.NewServer(client.Handler())
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	req.Header.Set("Accept", "application/json")
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var page struct {
		Clients []struct {
			Face        string `json:"face"`
			Datacenters []struct {
				Name      string  `json:"name"`
				Share     float64 `json:"share"`
				Instances int     `json:"instances"`
				Watch     struct {
					Datacenter string `json:"datacenter"`
					Error      string `json:"error"`
				} `json:"watch"`
			} `json:"datacenters"`
			Instances []struct {
				Addr       string `json:"addr"`
				Datacenter string `json:"datacenter"`
			} `json:"instances"`
		} `json:"clients"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, c := range page.Clients {
		dcOf := map[string]string{}
		for _, in := range c.Instances {
			dcOf[in.Addr] = in.Datacenter
		}
		if _, ok := dcOf[addr]; !ok {
			continue
		}
		seen++
		if dcOf[addr] != "dc1" {
			t.Errorf("%s: instance %s in datacenter %q, want dc1", c.Face, addr, dcOf[addr])
		}
		if len(c.Datacenters) != 2 || c.Datacenters[0].Name != "dc1" || c.Datacenters[1].Name != "dc2" {
			t.Errorf("%s: datacenters %+v, want dc1 and dc2", c.Face, c.Datacenters)
			continue
		}
		if d := c.Datacenters[1]; math.Abs(d.Share-(1-1.4/3)) > 0.01 || d.Watch.Datacenter != "dc2" || d.Watch.Error == "" {
			t.Errorf("%s: dc2 %+v, want a share of %.3f and its watch failing", c.Face, d, 1-1.4/3)
		}
		if d := c.Datacenters[0]; d.Instances != 3 || d.Watch.Error != "" {
			t.Errorf("%s: dc1 %+v, want 3 instances and its watch fine", c.Face, d)
		}
	}
	if seen != 2 {
		t.Errorf("the page shows %d clients holding %s, want 2 (both faces)", seen, addr)
	}
}

// Discovery "query" runs a prepared query that fails over to dc2, as
// operators who steer failover in Consul write it: calls go to dc1 while
// it has passing instances and to dc2 once it has none, as Consul says,
// a poll (a second) and a health check after the fact.
func TestPreparedQueryDiscovery(t *testing.T) {
	agents, insts := twoDatacenters(t, 2)
	dcOf := byDC(insts)
	_, _, err := agents[0].API().PreparedQuery().Create(&api.PreparedQueryDefinition{Name: "trimsvc-anywhere",
		Service: api.ServiceQuery{Service: "trimsvc", OnlyPassing: true, Failover: api.QueryFailoverOptions{Datacenters: []string{"dc2"}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, client.Config{Consul: sd.ConsulConfig{Address: agents[0].HTTPAddr}, Service: "trimsvc",
		Discovery: client.DiscoveryQuery, Query: "trimsvc-anywhere"})
	waitInstances(t, c.Endpoint(), 2)
	run := loadgen.Start(context.Background(), c.Endpoint(), "x", loadgen.Options{Rate: 100, Duration: 8 * time.Second})
	time.Sleep(time.Second)
	killed := time.Now()
	for _, inst := range insts[0] {
		if err := inst.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	calls, _ := run.Wait()
	if _, failed, remote := window(calls, dcOf, time.Time{}, killed.Add(-50*time.Millisecond)); remote != 0 || failed != 0 {
		t.Errorf("before the kill: %.3f of calls answered in dc2 and %d failed, want none", remote, failed)
	}
	var firstRemote time.Duration
	for _, c := range calls {
		if c.Err == nil && dcOf[c.Instance] == 1 {
			firstRemote = c.Start.Add(c.Took).Sub(killed)
			break
		}
	}
	n, failed, remote := window(calls, dcOf, killed.Add(5*time.Second), time.Now())
	_, failedAtKill, _ := window(calls, dcOf, killed, killed.Add(5*time.Second))
	t.Logf("every dc1 instance killed: first dc2 answer %v after; %d calls failed while the query still named dc1", firstRemote, failedAtKill)
	if firstRemote <= 0 || remote != 1 || failed != 0 || n == 0 {
		t.Errorf("from 5s after every dc1 instance was killed: %.3f of %d calls answered in dc2 (%d failed), want all in dc2", remote, n, failed)
	}
}

// Datacenters "_nearest" through dc2's agent: dc2 first, the nearest (its
// own), then dc1; every call in dc2, and dc1 takes them once dc2's
// instances are gone.
func TestNearestDatacenterFirst(t *testing.T) {
	agents, insts := twoDatacenters(t, 2)
	dcOf := byDC(insts)
	c := newClient(t, client.Config{Consul: sd.ConsulConfig{Address: agents[1].HTTPAddr}, Service: "trimsvc", Datacenters: []string{"_nearest"}})
	for range 200 {
		call := loadgen.Do(context.Background(), c.Endpoint(), trimsvc.TrimRequest{S: "x"})
		if call.Err != nil {
			t.Fatal(call.Err)
		}
		if dcOf[call.Instance] != 1 {
			t.Fatalf("through dc2's agent with _nearest: an answer from %s in dc1, want dc2 first", call.Instance)
		}
	}
	for _, inst := range insts[1] {
		if err := inst.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	for range 200 {
		call := loadgen.Do(context.Background(), c.Endpoint(), trimsvc.TrimRequest{S: "x"})
		if call.Err != nil {
			t.Fatalf("dc2's instances killed: %v, want dc1 to answer", call.Err)
		}
		if dcOf[call.Instance] != 0 {
			t.Fatalf("dc2's instances killed: an answer from %s, want dc1", call.Instance)
		}
	}
}

// A caller in zone a of region r1, the instances in zones a and b of it:
// calls stay in zone a while enough of it is healthy, spill to zone b in
// the share the band rule says, and move there, none failing, when zone a
// is gone.
func TestLocalityZonesFirst(t *testing.T) {
	agent := testenv.Consul(t)
	zoneOf := map[string]string{}
	var zoneA []*proc.Trimsvc
	var ids []string
	for _, zone := range []string{"a", "a", "a", "b", "b", "b"} {
		inst := testenv.StartTrimsvc(t, bins.Trimsvc(t), agent.HTTPAddr, "-locality-region", "r1", "-locality-zone", zone)
		zoneOf[inst.ID] = zone
		ids = append(ids, inst.ID)
		if zone == "a" {
			zoneA = append(zoneA, inst)
		}
	}
	agent.WaitPassing("trimsvc", ids...)
	c := newClient(t, client.Config{Consul: sd.ConsulConfig{Address: agent.HTTPAddr}, Service: "trimsvc", Region: "r1", Zone: "a"})
	share := func(n int) (float64, int) {
		b, failed := 0, 0
		for range n {
			call := loadgen.Do(context.Background(), c.Endpoint(), trimsvc.TrimRequest{S: "x"})
			switch {
			case call.Err != nil:
				failed++
			case zoneOf[call.Instance] == "b":
				b++
			}
		}
		return float64(b) / float64(n), failed
	}
	if b, failed := share(300); b != 0 || failed != 0 {
		t.Fatalf("every instance healthy: %.3f of calls in zone b (%d failed), want none", b, failed)
	}
	for _, inst := range zoneA[:2] {
		if err := inst.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond) // their connections known dead
	b, failed := share(2000)
	want := 1 - 1.4/3
	t.Logf("two of zone a's three instances killed: %.3f of calls in zone b (the rule: %.3f), %d failed", b, want, failed)
	if math.Abs(b-want) > 0.05 || failed != 0 {
		t.Errorf("two of zone a's three instances killed: %.3f of calls in zone b, %d failed; want %.3f ± 0.05, none failed", b, failed, want)
	}
	if err := zoneA[2].Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if b, failed := share(300); b != 1 || failed != 0 {
		t.Errorf("zone a gone: %.3f of calls in zone b, %d failed; want all, none failed", b, failed)
	}
}

// Config.Near "_agent": the instances on nodes near the agent's, by
// Consul's network coordinates, take every call while they are healthy,
// the farther ones the shortfall (the band rule), and all calls, none
// failing, once the near ones are gone. On both faces. Four nodes of
// their own in the catalog, two 0.2ms from the agent's node and two
// 20ms, each with an instance.
func TestNearNodesFirst(t *testing.T) {
	agent := testenv.Consul(t)
	consul := agent.API()
	self, err := consul.Agent().NodeName()
	if err != nil {
		t.Fatal(err)
	}
	servers := map[string]*grpc.Server{}
	for _, node := range []string{"near-1", "near-2", "far-1", "far-2"} {
		svc, _ := trimsvc.New(64)
		srv := grpc.NewServer()
		pb.RegisterTrimServer(srv, trim.NewGRPCServer(trimsvc.NewServerSet(svc), node, log.NewNopLogger()))
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(lis)
		t.Cleanup(srv.Stop)
		servers[node] = srv
		port := lis.Addr().(*net.TCPAddr).Port
		if _, err := consul.Catalog().Register(&api.CatalogRegistration{Node: node, Address: "127.0.0.1",
			Service: &api.AgentService{ID: node, Service: "nearsvc", Address: "127.0.0.1", Port: port}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	// The agent's node at the origin (where a lone agent's own coordinate
	// is), the others along one axis.
	at := map[string]float64{self: 0, "near-1": 0.0002, "near-2": 0.0002, "far-1": 0.02, "far-2": 0.02}
	for node, x := range at {
		c := coordinate.NewCoordinate(coordinate.DefaultConfig())
		c.Vec[0] = x
		if _, err := consul.Coordinate().Update(&api.CoordinateEntry{Node: node, Coord: c}, nil); err != nil {
			t.Fatal(err)
		}
	}
	// The servers apply coordinate updates in batches, every 5s.
	deadline := time.Now().Add(20 * time.Second)
	for {
		coords, _, err := consul.Coordinate().Nodes(nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(coords) >= len(at) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d node coordinates after 20s, want %d", len(coords), len(at))
		}
		time.Sleep(200 * time.Millisecond)
	}

	cfg := client.Config{Consul: sd.ConsulConfig{Address: agent.HTTPAddr}, Service: "nearsvc", Near: "_agent"}
	faces := bothFaces(t, cfg)
	far := func(e endpoint.Endpoint, n int) (float64, int) {
		f, failed := 0, 0
		for range n {
			call := loadgen.Do(context.Background(), e, trimsvc.TrimRequest{S: "x"})
			switch {
			case call.Err != nil:
				failed++
			case strings.HasPrefix(call.Instance, "far-"):
				f++
			}
		}
		return float64(f) / float64(n), failed
	}
	for _, face := range faces {
		if f, failed := far(face.e, 300); f != 0 || failed != 0 {
			t.Fatalf("%s, every instance healthy: %.3f of calls on far nodes (%d failed), want none", face.name, f, failed)
		}
	}
	servers["near-1"].Stop()
	time.Sleep(500 * time.Millisecond) // its connections known dead
	for _, face := range faces {
		f, failed := far(face.e, 2000)
		want := 1 - 1.4/2
		t.Logf("%s, one of the two near instances gone: %.3f of calls on far nodes (the rule: %.3f), %d failed", face.name, f, want, failed)
		if math.Abs(f-want) > 0.05 || failed != 0 {
			t.Errorf("%s, one of the two near instances gone: %.3f of calls on far nodes, %d failed; want %.3f ± 0.05, none failed", face.name, f, failed, want)
		}
	}
	servers["near-2"].Stop()
	for _, face := range faces {
		if f, failed := far(face.e, 300); f != 1 || failed != 0 {
			t.Errorf("%s, the near instances gone: %.3f of calls on far nodes, %d failed; want all, none failed", face.name, f, failed)
		}
	}

	// A node Consul does not know, or one without a coordinate, is an
	// error, said at once.
	if _, err := consul.Catalog().Register(&api.CatalogRegistration{Node: "lonely", Address: "127.0.0.1"}, nil); err != nil {
		t.Fatal(err)
	}
	for near, want := range map[string]string{"no-such-node": `node "no-such-node": consul at`, "lonely": "node lonely: no network coordinate yet"} {
		cfg.Near = near
		if _, err := trim.NewClient(cfg); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Near %s: %v, want an error saying %s", near, err, want)
		}
	}
}

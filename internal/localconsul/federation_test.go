package localconsul_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/internal/localconsul"
	"github.com/trimkit/trimkit/internal/testenv"
)

// TestSecureFederation federates two secure datacenters, a server and a
// client agent each: each knows both, the secondary replicates the
// primary's ACLs, and a caller's token made in the primary reads, through
// a client agent of the primary, a service registered in the secondary
// (over the WAN, each server verifying the other's certificate for its
// datacenter).
func TestSecureFederation(t *testing.T) {
	bin := testenv.ConsulBinary(t)
	dirs := []string{filepath.Join(t.TempDir(), "dc1"), filepath.Join(t.TempDir(), "dc2")}
	f, err := localconsul.NewFederation(bin, dirs, localconsul.ClusterOptions{Servers: 1, Clients: 1, Secure: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, a := range f.Members() {
				t.Logf("%s log:\n%s", a.Name, a.LogTail())
			}
		}
		if err := f.Close(); err != nil {
			t.Errorf("stop the federation: %v", err)
		}
	})
	start := time.Now()
	if err := f.Start(90 * time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("two datacenters federated in %v", time.Since(start).Round(time.Millisecond))
	dc1, dc2 := f.Datacenters[0], f.Datacenters[1]
	var names []string
	for _, a := range f.Members() {
		names = append(names, a.Name)
	}
	if want := []string{"server-1", "client-1", "dc2-server-1", "dc2-client-1"}; !slices.Equal(want, names) {
		t.Errorf("members %q, want %q", names, want)
	}
	if dc1.Datacenter != "dc1" || dc2.Datacenter != "dc2" || dc2.Security != dc1.Security {
		t.Errorf("datacenters %s and %s, security shared %t", dc1.Datacenter, dc2.Datacenter, dc2.Security == dc1.Security)
	}
	hcl, err := os.ReadFile(filepath.Join(dirs[1], "dc2-server-1", "agent.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`datacenter = "dc2"`, `primary_datacenter = "dc1"`, "enable_token_replication = true",
		`replication = "` + dc1.Security.ReplicationToken + `"`, "retry_join_wan = [\"" + dc1.Servers[0].SerfWANAddr + `"]`} {
		if !strings.Contains(string(hcl), want) {
			t.Errorf("dc2's server's configuration lacks %s:\n%s", want, hcl)
		}
	}
	if strings.Contains(string(hcl), dc1.Security.ManagementToken) {
		t.Errorf("dc2's server's configuration holds the management token:\n%s", hcl)
	}

	// Each side knows both.
	for _, a := range []*localconsul.Agent{dc1.Clients[0], dc2.Clients[0]} {
		have, err := testenv.API(t, a).Catalog().Datacenters()
		if slices.Sort(have); err != nil || !slices.Equal(have, []string{"dc1", "dc2"}) {
			t.Errorf("%s knows the datacenters %q (%v), want dc1 and dc2", a.Name, have, err)
		}
	}

	// A caller's token, made in the primary, reads a service of dc2
	// through dc1's client agent once dc2's server has replicated it.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tokens, err := dc1.Security.SetupACL(ctx, testenv.API(t, dc1.Servers[0]), "web")
	if err != nil {
		t.Fatal(err)
	}
	if err := localconsul.WaitTokens(ctx, append(dc1.Servers, dc2.Servers...), tokens.Trimsvc, tokens.Client); err != nil {
		t.Fatal(err)
	}
	reg := client(t, dc1.Security, dc2.Clients[0], tokens.Trimsvc)
	if err := reg.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "web-dc2", Name: "web", Port: 1,
		Check: &api.AgentServiceCheck{TTL: "1m", Status: api.HealthPassing}}); err != nil {
		t.Fatal(err)
	}
	caller := client(t, dc1.Security, dc1.Clients[0], tokens.Client)
	for {
		entries, _, err := caller.Health().Service("web", "", true, (&api.QueryOptions{Datacenter: "dc2"}).WithContext(ctx))
		if err == nil && len(entries) == 1 && entries[0].Service.ID == "web-dc2" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("dc2's web through dc1 with the caller's token: %d entries, %v", len(entries), err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	t.Logf("read through dc1 after %v", time.Since(start))
	// The secondary's directory opens as its datacenter.
	o, err := localconsul.OpenCluster(bin, dirs[1])
	if err != nil {
		t.Fatal(err)
	}
	if o.Datacenter != "dc2" || o.Member("dc2-server-1") == nil || o.Member("dc2-server-1").SerfWANAddr != dc2.Servers[0].SerfWANAddr ||
		o.Security.ReplicationToken != dc1.Security.ReplicationToken {
		t.Errorf("opened dc2: datacenter %q, members %v", o.Datacenter, o.Members())
	}
}

package localconsul_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/internal/localconsul"
	"github.com/trimkit/trimkit/internal/testenv"
)

func TestSecureAgentAndCluster(t *testing.T) {
	bin := testenv.ConsulBinary(t)
	sec, err := localconsul.NewSecurity(bin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a, err := localconsul.New(bin, t.TempDir(), localconsul.Options{Security: sec})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	c, err := a.API()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tokens, err := sec.SetupACL(ctx, c, "trimsvc")
	if err != nil {
		t.Fatal(err)
	}
	// The caller's token reads the service, may not register one.
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token = a.URL(), tokens.Client
	cfg.TLSConfig = api.TLSConfig{CAFile: sec.CA.CertFile, CertFile: sec.CLICertFile, KeyFile: sec.CLIKeyFile}
	caller, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := caller.Health().Service("trimsvc", "", true, nil); err != nil {
		t.Errorf("caller reading: %v", err)
	}
	err = caller.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "x", Name: "trimsvc", Port: 1})
	var se api.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusForbidden {
		t.Errorf("caller registering: want 403, have %v", err)
	}
	// An instance's own token writes its own load report, and no other
	// key: not a sibling's, not a ghost's.
	instance := func(id string) *api.Client {
		tok, err := sec.InstanceToken(c, "trimsvc", id, a.Name)
		if err != nil {
			t.Fatal(err)
		}
		return client(t, sec, a, tok)
	}
	ia := instance("trimsvc-a")
	session, _, err := ia.Session().Create(&api.SessionEntry{TTL: "10s", Behavior: api.SessionBehaviorDelete}, nil)
	if err != nil {
		t.Fatalf("an instance's session on its node: %v", err)
	}
	if ok, _, err := ia.KV().Acquire(&api.KVPair{Key: "trimkit/load/trimsvc/trimsvc-a", Value: []byte("{}"), Session: session}, nil); !ok || err != nil {
		t.Errorf("an instance writing its own report: %v %v", ok, err)
	}
	for _, key := range []string{"trimkit/load/trimsvc/trimsvc-b", "trimkit/load/trimsvc/ghost"} {
		_, _, err := ia.KV().Acquire(&api.KVPair{Key: key, Value: []byte(`{"load":1e300}`), Session: session}, nil)
		if !errors.As(err, &se) || se.Code != http.StatusForbidden {
			t.Errorf("an instance acquiring %s: want 403, have %v", key, err)
		}
		if _, err := ia.KV().Put(&api.KVPair{Key: key, Value: []byte(`{"load":1e300}`)}, nil); !errors.As(err, &se) || se.Code != http.StatusForbidden {
			t.Errorf("an instance writing %s: want 403, have %v", key, err)
		}
	}
	if _, _, err := ia.Session().CreateNoChecks(&api.SessionEntry{Node: "another-node", TTL: "10s"}, nil); !errors.As(err, &se) || se.Code != http.StatusForbidden {
		t.Errorf("an instance creating a session on another node: want 403, have %v", err)
	}

	// Plain HTTP gets no API, only a 400.
	if resp, err := http.Get("http://" + a.HTTPAddr + "/v1/status/leader"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP: %s", resp.Status)
		}
	}

	cl, err := localconsul.NewCluster(bin, t.TempDir(), localconsul.ClusterOptions{Secure: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Start(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// The agents' token existed before any client agent started: a
	// service registered through client agent 1 right away passes in the
	// catalog at once, not after Consul's retry of a failed sync (15-30s).
	c1, err := cl.Clients[0].API()
	if err != nil {
		t.Fatal(err)
	}
	if err := c1.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "web-1", Name: "web", Port: 1,
		Check: &api.AgentServiceCheck{TTL: "1m", Status: api.HealthPassing}}); err != nil {
		t.Fatal(err)
	}
	c2, err := cl.Clients[1].API()
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if _, err := localconsul.WaitPassing(wctx, c2, "web", localconsul.Exactly("web-1")); err != nil {
		t.Errorf("a service of client agent 1 in the catalog: %v", err)
	}
	cc, err := cl.Servers[0].API()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Security.SetupACL(ctx, cc, "trimsvc"); err != nil {
		t.Fatal(err)
	}
}

// client is an API client for agent a with token, over TLS with sec's CLI
// certificate.
func client(t *testing.T, sec *localconsul.Security, a *localconsul.Agent, token string) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token = a.URL(), token
	cfg.TLSConfig = api.TLSConfig{CAFile: sec.CA.CertFile, CertFile: sec.CLICertFile, KeyFile: sec.CLIKeyFile}
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

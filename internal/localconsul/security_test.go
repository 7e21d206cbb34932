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
	cc, err := cl.Servers[0].API()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Security.SetupACL(ctx, cc, "trimsvc"); err != nil {
		t.Fatal(err)
	}
}

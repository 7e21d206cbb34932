package sd

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/internal/testenv"
)

// A server that knows no leader answers /v1/status/leader with a 500 and
// "No cluster leader" (Consul's structs.ErrNoLeader): noClusterLeader
// knows consul/api's error for that answer, and nothing else.
func TestNoClusterLeaderIsConsulAPIs(t *testing.T) {
	body := "No cluster leader"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, body, http.StatusInternalServerError)
	}))
	defer srv.Close()
	c, err := api.NewClient(&api.Config{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Status().Leader()
	if !noClusterLeader(err) {
		t.Errorf("consul/api's error for a server without a leader: %v (%T), not recognized", err, err)
	}
	body = "rpc error making call: EOF"
	if _, err := c.Status().Leader(); err == nil || noClusterLeader(err) {
		t.Errorf("another 500 (%v) taken for no leader", err)
	}
	if noClusterLeader(nil) || noClusterLeader(errors.New("No cluster leader")) {
		t.Error("an error that is not consul/api's answer taken for no leader")
	}
}

// A session bound to a check that is critical is refused by a real agent,
// and checkCritical knows the refusal; other errors it does not.
func TestCheckCriticalIsConsuls(t *testing.T) {
	agent := testenv.Consul(t)
	c := agent.API()
	reg := &api.AgentServiceRegistration{ID: "crit-1", Name: "crit", Port: 1,
		Check: &api.AgentServiceCheck{CheckID: "service:crit-1", TTL: "30s", Status: api.HealthCritical}}
	if err := c.Agent().ServiceRegister(reg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := NewClient(c).(loadClient)
	_, err := client.CreateSession(ctx, &api.SessionEntry{Checks: []string{"serfHealth", "service:crit-1"}, TTL: "10s"})
	if !checkCritical(err) {
		t.Fatalf("the agent's refusal of a session on a critical check: %v, not recognized", err)
	}
	_, err = client.CreateSession(ctx, &api.SessionEntry{Checks: []string{"serfHealth", "service:none"}, TTL: "10s"})
	if err == nil || checkCritical(err) {
		t.Errorf("a session on a missing check: %v, taken for a critical one", err)
	}
}

package sd_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/sd"
)

// An agent that answers HTTPS in plain HTTP (https:// to a plaintext
// port) is a misconfiguration that trying again does not mend: Permanent,
// by net/http's own error, through Consul's client and a wrap of ours.
func TestPermanentPlainHTTPAgentForHTTPS(t *testing.T) {
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
	}))
	defer plain.Close()
	c, err := api.NewClient(&api.Config{Address: plain.Listener.Addr().String(), Scheme: "https"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Agent().Self()
	if err == nil {
		t.Fatal("an HTTPS request to a plain HTTP server succeeded")
	}
	if wrapped := fmt.Errorf("look up: %w", err); !sd.Permanent(wrapped) {
		t.Errorf("%v: want it permanent", wrapped)
	}
}

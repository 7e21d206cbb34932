package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/internal/localconsul"
	"github.com/trimkit/trimkit/internal/testenv"
)

// definitionFile prints trimsvc's service definition for a free port into
// dir/trimsvc.json and returns the port and the service ID.
func definitionFile(t *testing.T, dir string) (int, string) {
	t.Helper()
	ports, err := localconsul.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	p := testenv.Start(t, bins.Trimsvc(t), "-grpc-addr", addr, "-check-interval", "1s", "-tags", "from-file", "-print-service-definition")
	if code := waitExit(t, p, 10*time.Second); code != 0 {
		t.Fatalf("-print-service-definition: exit %d", code)
	}
	if err := os.WriteFile(filepath.Join(dir, "trimsvc.json"), []byte(p.Stdout()), 0o600); err != nil {
		t.Fatal(err)
	}
	return ports[0], "trimsvc-127.0.0.1-" + strconv.Itoa(ports[0])
}

// serveUnregistered runs trimsvc on port without registering, and checks
// that the agent's own registration passes, that SIGTERM takes it out of the
// passing list through the check alone, and that the instance stays
// registered.
func serveUnregistered(t *testing.T, agent *testenv.Agent, port int, id string) {
	t.Helper()
	in := testenv.Start(t, bins.Trimsvc(t), "-grpc-addr", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), "-http-addr", "off",
		"-consul-addr", agent.HTTPAddr, "-register=false", "-drain", "2s")
	agent.WaitPassing("trimsvc", id)
	entries, _, err := agent.API().Health().Service("trimsvc", "from-file", true, nil)
	if err != nil || len(entries) != 1 || entries[0].Service.Port != port {
		t.Fatalf("the definition's tag and port: %v, %v", entries, err)
	}
	if err := in.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	agent.WaitPassing("trimsvc") // none passing: NOT_SERVING turned the check critical
	if code := waitExit(t, in, 15*time.Second); code != 0 {
		t.Errorf("exit after SIGTERM: %d", code)
	}
	services, err := agent.API().Agent().Services()
	if _, ok := services[id]; err != nil || !ok {
		t.Errorf("-register=false deregistered the agent's own service (err %v)", err)
	}
}

func TestServiceFromTheAgentsConfigDir(t *testing.T) {
	dir := t.TempDir()
	port, id := definitionFile(t, dir)
	la, err := localconsul.New(testenv.ConsulBinary(t), t.TempDir(), localconsul.Options{ConfigDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	agent := testenv.Adopt(t, la)
	serveUnregistered(t, agent, port, id)
}

func TestServiceRegisteredWithTheConsulCLI(t *testing.T) {
	dir := t.TempDir()
	port, id := definitionFile(t, dir)
	agent := testenv.Consul(t)
	register := exec.Command(testenv.ConsulBinary(t), "services", "register", "-http-addr", agent.URL(), filepath.Join(dir, "trimsvc.json"))
	if out, err := register.CombinedOutput(); err != nil {
		t.Fatalf("consul services register: %v\n%s", err, out)
	}
	reg, _, err := agent.API().Agent().Service(id, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want, have := (api.AgentService{ID: id, Service: "trimsvc", Port: port}), (api.AgentService{ID: reg.ID, Service: reg.Service, Port: reg.Port}); want.ID != have.ID || want.Port != have.Port || want.Service != have.Service {
		t.Errorf("registered: want %+v, have %+v", want, have)
	}
	serveUnregistered(t, agent, port, id)
}

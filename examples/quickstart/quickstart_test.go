package quickstart_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/internal/testenv"
)

var bins testenv.Binaries

func TestMain(m *testing.M) { bins.Main(m) }

// The README's quick starts work as they are: the server registers in the
// Consul of the environment, the client finds it there and calls it, and
// on SIGTERM the server leaves Consul and exits 0.
func TestQuickStarts(t *testing.T) {
	agent := testenv.Consul(t)
	t.Setenv(api.HTTPAddrEnvName, agent.HTTPAddr)
	t.Setenv(api.HTTPTokenEnvName, "")
	server := testenv.Start(t, bins.Path(t, "github.com/trimkit/trimkit/examples/quickstart/server"))
	testenv.WaitPassing(t, agent.API(), "orders", func(ids []string) bool { return len(ids) == 1 })

	out, err := exec.Command(bins.Path(t, "github.com/trimkit/trimkit/examples/quickstart/client")).CombinedOutput()
	if want := fmt.Sprintf(" on orders-%d\n", server.PID()); err != nil || !strings.HasPrefix(string(out), "created ") || !strings.Contains(string(out), want) {
		t.Fatalf("client: want a line \"created ID%s\", have %v:\n%s", want, err, out)
	}

	if err := server.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if code, err := server.Wait(ctx); err != nil || code != 0 {
		t.Fatalf("server after SIGTERM: exit %d, %v", code, err)
	}
	entries, _, err := agent.API().Health().Service("orders", "", false, nil)
	if err != nil || len(entries) != 0 {
		t.Errorf("orders in Consul after the server stopped: %d, %v", len(entries), err)
	}
}

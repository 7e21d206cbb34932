package localjaeger

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/trimkit/trimkit/internal/localconsul"
)

// Jaeger is a running Jaeger.
type Jaeger struct {
	Cmd *exec.Cmd
	// OTLPHTTP and OTLPGRPC are where it receives spans, host:port
	// (OTEL_EXPORTER_OTLP_ENDPOINT=http://OTLPHTTP).
	OTLPHTTP, OTLPGRPC string
	// Query is the query service and UI, host:port: http://Query/ in a
	// browser, http://Query/api/traces?service=NAME for JSON.
	Query  string
	exited chan struct{}
	err    error
}

// config is Jaeger v2's configuration (an OpenTelemetry Collector's)
// with only what trimkit uses: OTLP in, memory storage, query and UI.
// Its query service does not trace itself (enable_tracing, on by
// default, sends to localhost:4317 and waits 10s at exit to flush).
const config = `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    enable_tracing: false
    storage:
      traces: memstore
    http:
      endpoint: %s
    grpc:
      endpoint: %s
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %s
      http:
        endpoint: %s
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`

// Start runs bin with its configuration in dir, on free loopback ports,
// and waits up to timeout for its query service to answer. detach puts it
// in a process group of its own, to outlive its parent (make up); else it
// gets SIGKILL when its parent dies.
func Start(bin, dir string, detach bool, timeout time.Duration) (*Jaeger, error) {
	// Ports as the Consul agents get theirs: below the kernel's
	// ephemeral range, where an outgoing connection cannot take one
	// before Jaeger binds it.
	nums, err := localconsul.FreePorts(4)
	if err != nil {
		return nil, err
	}
	var ports []string
	for _, p := range nums {
		ports = append(ports, net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	}
	j := &Jaeger{Query: ports[0], OTLPGRPC: ports[2], OTLPHTTP: ports[3], exited: make(chan struct{})}
	path := filepath.Join(dir, "jaeger.yaml")
	if err := os.WriteFile(path, fmt.Appendf(nil, config, ports[0], ports[1], ports[2], ports[3]), 0o600); err != nil {
		return nil, err
	}
	log, err := os.Create(filepath.Join(dir, "jaeger.log"))
	if err != nil {
		return nil, err
	}
	defer log.Close()
	j.Cmd = exec.Command(bin, "--config", path)
	j.Cmd.Stdout, j.Cmd.Stderr = log, log
	if detach {
		j.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	} else {
		j.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	if err := j.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { j.err = j.Cmd.Wait(); close(j.exited) }()
	if err := j.wait(timeout); err != nil {
		j.Stop()
		return nil, fmt.Errorf("jaeger (log: %s): %w", log.Name(), err)
	}
	return j, nil
}

// wait waits until the query service answers.
func (j *Jaeger) wait(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+j.Query+"/api/services", nil)
		resp, err := http.DefaultClient.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-j.exited:
			return fmt.Errorf("exited before it served: %v", j.err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return errors.New("its query service did not answer within " + timeout.String())
		}
	}
}

// Stop stops it (SIGTERM, then SIGKILL after 5s) and waits for it.
func (j *Jaeger) Stop() {
	_ = j.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-j.exited:
	case <-time.After(5 * time.Second):
		_ = j.Cmd.Process.Kill()
		<-j.exited
	}
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/trimkit/trimkit/internal/addrfile"
	"github.com/trimkit/trimkit/internal/localconsul"
	"github.com/trimkit/trimkit/internal/proc"
)

// state is what up records for down.
type state struct {
	Consul    stateProc   `json:"consul"`
	HTTPAddr  string      `json:"consul_http_addr"`
	DNSPort   int         `json:"consul_dns_port"`
	Instances []stateProc `json:"instances"`
}

type stateProc struct {
	PID  int    `json:"pid"`
	Exe  string `json:"exe"` // absolute path, checked before signalling
	ID   string `json:"id,omitempty"`
	Addr string `json:"addr,omitempty"`
	Log  string `json:"log"`
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

func up(ctx context.Context, cfg config, w io.Writer) (err error) {
	if _, err := os.Stat(statePath(cfg.state)); err == nil {
		return fmt.Errorf("%s exists: already up? run `make down` first", statePath(cfg.state))
	}
	bins, err := binaries(cfg.bin)
	if err != nil {
		return err
	}
	// Record what /proc/PID/exe will show, so down can tell its own
	// processes from a reused PID.
	for _, p := range []*string{&bins.consul, &bins.trimsvc} {
		if *p, err = filepath.EvalSymlinks(*p); err != nil {
			return err
		}
		if *p, err = filepath.Abs(*p); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(cfg.state, 0o755); err != nil {
		return err
	}
	agent, err := localconsul.New(bins.consul, cfg.state, localconsul.Options{Detach: true})
	if err != nil {
		return err
	}
	if err := agent.Start(30 * time.Second); err != nil {
		return err
	}
	st := state{
		Consul:   stateProc{PID: agent.PID(), Exe: bins.consul, Log: agent.LogPath},
		HTTPAddr: agent.HTTPAddr,
		DNSPort:  agent.DNSPort,
	}
	// Whatever fails from here on, leave a state that down can clean up.
	defer func() {
		if werr := writeState(cfg.state, st); werr != nil {
			err = errors.Join(err, werr)
		}
		if err != nil {
			err = fmt.Errorf("%w (run `make down` to stop what started)", err)
		}
	}()
	for i := range cfg.instances {
		logPath := filepath.Join(cfg.state, fmt.Sprintf("trimsvc-%d.log", i+1))
		addrPath := filepath.Join(cfg.state, fmt.Sprintf("trimsvc-%d.addr.json", i+1))
		p, err := proc.StartDetached(bins.trimsvc, logPath, "-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0",
			"-consul-addr", agent.HTTPAddr, "-check-interval", "1s", "-addr-file", addrPath)
		if err != nil {
			return err
		}
		st.Instances = append(st.Instances, stateProc{PID: p, Exe: bins.trimsvc, Log: logPath})
		waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		a, err := addrfile.Wait(waitCtx, addrPath, nil)
		cancel()
		if err != nil {
			return fmt.Errorf("trimsvc %d (log %s): %w", i+1, logPath, err)
		}
		st.Instances[i].ID, st.Instances[i].Addr = a.ServiceID, a.Advertised
	}
	if err := waitPassing(ctx, agent, cfg.instances); err != nil {
		return err
	}
	fmt.Fprintf(w, "up: consul dev agent pid %d, UI http://%s/ui\n", st.Consul.PID, agent.HTTPAddr)
	for _, in := range st.Instances {
		fmt.Fprintf(w, "  %-32s %s (pid %d, log %s)\n", in.ID, in.Addr, in.PID, in.Log)
	}
	fmt.Fprintf(w, `try:
  go run ./cmd/client -consul-addr %[1]s "  hello  world  "
  go run ./cmd/client -consul-addr %[1]s -n 10000 -c 8 x
  grpcurl -plaintext %[2]s list
  dig @127.0.0.1 -p %[3]d trimsvc.service.consul SRV
  curl -s 'http://%[1]s/v1/health/service/trimsvc?passing'
then: make down
`, agent.HTTPAddr, st.Instances[0].Addr, agent.DNSPort)
	return nil
}

func down(cfg config, w io.Writer) error {
	b, err := os.ReadFile(statePath(cfg.state))
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(w, "down: nothing is up (no %s)\n", statePath(cfg.state))
		return nil
	}
	if err != nil {
		return err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("read %s: %w", statePath(cfg.state), err)
	}
	var errs []error
	for _, p := range append(st.Instances, st.Consul) { // consul last
		stopped, err := proc.StopPID(p.PID, p.Exe, 10*time.Second)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(w, "down: %s pid %d: %s\n", filepath.Base(p.Exe), p.PID, stopped)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return os.RemoveAll(cfg.state)
}

func writeState(dir string, st state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(statePath(dir), b, 0o644)
}

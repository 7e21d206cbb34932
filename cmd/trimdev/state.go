package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// state is what up, cluster and chaos record for the member commands
// (status, kill, stop, restart) and for down.
type state struct {
	// Cluster is the cluster's directory (localconsul.OpenCluster); "" for
	// up's dev agent. With several datacenters (cluster -dcs 2), it is the
	// primary's, Federated are the others', and Datacenters names them
	// all, the primary first.
	Cluster     string      `json:"cluster,omitempty"`
	Federated   []string    `json:"federated,omitempty"`
	Datacenters []string    `json:"datacenters,omitempty"`
	Consul      []stateProc `json:"consul"`
	HTTPAddr    string      `json:"consul_http_addr"` // the agent callers ask
	DNSPort     int         `json:"consul_dns_port"`
	Instances   []stateProc `json:"instances"`
	// Caller is what a caller of a secure cluster needs; nil for up.
	Caller *callerFiles `json:"caller,omitempty"`
	// Jaeger, with -tracing: its process (Addr: its query service and
	// UI) and where it receives spans, for callers' OTEL_EXPORTER_OTLP_ENDPOINT.
	Jaeger *stateProc `json:"jaeger,omitempty"`
	OTLP   string     `json:"otlp_endpoint,omitempty"`
}

// stateProc is one process: a Consul agent or a trimsvc instance.
type stateProc struct {
	Name string `json:"name,omitempty"` // server-1, client-2, trimsvc-3, dc2-server-1
	// Datacenter is the datacenter of a member of several (cluster -dcs
	// 2); "" with one.
	Datacenter string `json:"datacenter,omitempty"`
	PID        int    `json:"pid"`
	Exe        string `json:"exe"` // absolute path, checked before signalling
	ID         string `json:"id,omitempty"`
	Addr       string `json:"addr,omitempty"` // an agent's HTTP address, an instance's advertised one
	Log        string `json:"log"`
	// An instance's listen addresses, where a restart binds again, and
	// the rest of its flags.
	GRPC string   `json:"grpc_addr,omitempty"`
	HTTP string   `json:"http_addr,omitempty"`
	Args []string `json:"args,omitempty"`
	// Env is what an instance's environment adds to trimdev's (the OTLP
	// endpoint, with -tracing).
	Env []string `json:"env,omitempty"`
}

// callerFiles are what a caller of a secure cluster uses: the callers'
// agent (client agent 2) with Consul's CA, a client certificate and the
// callers' token, and the service's CA and a client certificate for
// calling the instances (mutual TLS).
type callerFiles struct {
	ConsulAddr string `json:"consul_addr"`
	ConsulCA   string `json:"consul_ca_file"`
	ConsulCert string `json:"consul_client_cert"`
	ConsulKey  string `json:"consul_client_key"`
	TokenFile  string `json:"token_file"`
	TLSCA      string `json:"tls_ca_file"`
	TLSCert    string `json:"tls_cert_file"`
	TLSKey     string `json:"tls_key_file"`
	// Datacenters are the datacenters to call, in order of preference
	// (client.Config.Datacenters), with several; else nil, the agent's
	// own.
	Datacenters []string `json:"datacenters,omitempty"`
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

// errNotUp is readState's error when nothing is recorded.
var errNotUp = errors.New("nothing is up")

func readState(dir string) (state, error) {
	var st state
	b, err := os.ReadFile(statePath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return st, fmt.Errorf("%w (no %s)", errNotUp, statePath(dir))
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("read %s: %w", statePath(dir), err)
	}
	return st, nil
}

func writeState(dir string, st state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := statePath(dir) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, statePath(dir))
}

// failedPrefix names the directories that keep the logs of a failed run;
// down leaves them.
const failedPrefix = "failed-"

// lastDir is the directory, below the state directory, where down keeps
// the logs and the state file of what it stopped, replacing those of the
// down before.
const lastDir = "last"

// ownDirs are the directories up and cluster make in their state
// directory: the dev agent's data (localconsul), a cluster's members and
// Consul's CA (startCluster), a second datacenter's members (cluster -dcs
// 2) and the service's CA (secure). Every other
// directory there is not theirs, and keepLogs, keepLast and removeState
// leave it alone: logs kept of failed runs (failed-TIME) and of the last
// down (last), a setup of its own (chaos and walkthrough run in .run/chaos
// and .run/walkthrough, and may be starting, their state not yet
// recorded), or a user's.
func ownDirs() []string { return []string{"data", "consul", "consul-dc2", "service-ca"} }

// keepLogs moves the logs of the setup in dir, and a copy of its state
// file, to dir/failed-TIME/, keeping their paths below dir, and returns
// that directory.
func keepLogs(dir string, now time.Time) (string, error) {
	kept := filepath.Join(dir, failedPrefix+now.Format("20060102-150405"))
	if err := moveLogs(dir, kept); err != nil {
		return "", fmt.Errorf("keep the logs: %w", err)
	}
	return kept, nil
}

// keepLast moves the logs of the setup in dir, and a copy of its state
// file, to dir/last/, keeping their paths below dir, after removing what
// an earlier down left there; it returns that directory. The rest
// (Consul's data directories, cluster.json, certificates, tokens) is
// removeState's to remove: none of it is of use once its processes are
// gone, and the tokens are secrets.
func keepLast(dir string) (string, error) {
	last := filepath.Join(dir, lastDir)
	if err := os.RemoveAll(last); err != nil {
		return "", fmt.Errorf("replace %s: %w", last, err)
	}
	if err := moveLogs(dir, last); err != nil {
		return "", fmt.Errorf("keep the logs: %w", err)
	}
	return last, nil
}

// moveLogs moves every log of the setup in dir (in dir itself and in its
// ownDirs) to to, keeping their paths below dir, and copies its state file
// there; the state file stays until removeState, so that a failure on the
// way leaves down something to act on.
func moveLogs(dir, to string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	move := func(path string) error {
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		dst := filepath.Join(to, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if path == statePath(dir) {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return os.WriteFile(dst, b, 0o644)
		}
		return os.Rename(path, dst)
	}
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		switch {
		case !e.IsDir():
			if strings.HasSuffix(path, ".log") || path == statePath(dir) {
				if err := move(path); err != nil {
					return err
				}
			}
		case slices.Contains(ownDirs(), e.Name()):
			err := filepath.WalkDir(path, func(path string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() || !strings.HasSuffix(path, ".log") {
					return err
				}
				return move(path)
			})
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// removeState removes the setup in dir: every file in dir and its
// ownDirs, and dir itself when nothing else is left in it.
func removeState(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	kept := 0
	for _, e := range entries {
		if e.IsDir() && !slices.Contains(ownDirs(), e.Name()) {
			kept++
			continue
		}
		errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
	}
	if kept == 0 {
		errs = append(errs, os.Remove(dir))
	}
	return errors.Join(errs...)
}

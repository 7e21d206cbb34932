package sd_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/sd"
)

// agentStub answers the agent's service endpoints for the tokens it holds
// valid, 403 "ACL not found" for others, and records the token of every
// request.
type agentStub struct {
	mu        sync.Mutex
	valid     map[string]bool
	seen      []string            // the token of each request, in order
	registers map[string]int      // registrations by token
	services  map[string]struct{} // registered IDs
}

func newAgentStub(valid ...string) *agentStub {
	s := &agentStub{registers: map[string]int{}, services: map[string]struct{}{}}
	s.allow(valid...)
	return s
}

// allow makes tokens the only valid ones.
func (s *agentStub) allow(tokens ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.valid = map[string]bool{}
	for _, tok := range tokens {
		s.valid[tok] = true
	}
}

func (s *agentStub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	token := r.Header.Get("X-Consul-Token")
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = append(s.seen, token)
	if !s.valid[token] {
		http.Error(w, "ACL not found", http.StatusForbidden)
		return
	}
	switch id, lookup := strings.CutPrefix(r.URL.Path, "/v1/agent/service/"); {
	case r.Method == http.MethodPut && r.URL.Path == "/v1/agent/service/register":
		var reg api.AgentServiceRegistration
		if err := json.Unmarshal(body, &reg); err != nil || reg.ID == "" {
			http.Error(w, "bad registration: "+string(body), http.StatusBadRequest)
			return
		}
		s.registers[token]++
		s.services[reg.ID] = struct{}{}
	case lookup && r.Method == http.MethodGet:
		if _, ok := s.services[id]; !ok {
			http.Error(w, "unknown service ID", http.StatusNotFound)
			return
		}
		_ = json.NewEncoder(w).Encode(api.AgentService{ID: id, Service: "trimsvc"})
	default:
		http.Error(w, "not stubbed", http.StatusNotImplemented)
	}
}

// requests returns the tokens of the requests since the n-th.
func (s *agentStub) requests(n int) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen[n:]...)
}

func (s *agentStub) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}

// clearConsulEnv keeps the Consul CLI's environment out of a test.
func clearConsulEnv(t *testing.T) {
	for _, v := range []string{api.HTTPTokenEnvName, api.HTTPTokenFileEnvName, api.HTTPAddrEnvName, api.HTTPSSLEnvName,
		api.HTTPCAFile, api.HTTPCAPath, api.HTTPClientCert, api.HTTPClientKey, api.HTTPTLSServerName, api.HTTPSSLVerifyEnvName} {
		t.Setenv(v, "")
	}
}

// writeToken writes token to file. With keepStamp, the file keeps its size
// and modification time, so that only a 403 makes a reader look again;
// without, its modification time moves on by a second, whatever the clock
// granularity of the file system.
func writeToken(t *testing.T, file, token string, keepStamp bool) {
	t.Helper()
	before, err := os.Stat(file)
	if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err != nil { // a new file
		return
	}
	mtime := before.ModTime().Add(time.Second)
	if keepStamp {
		mtime = before.ModTime()
	}
	if err := os.Chtimes(file, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// tokenFileAgent is an agent stub that knows token, and a Consul
// client of it that reads its token from file, which holds token.
func tokenFileAgent(t *testing.T, token string) (*agentStub, string, sd.Client) {
	t.Helper()
	stub := newAgentStub(token)
	srv := httptest.NewServer(stub)
	t.Cleanup(srv.Close)
	file := filepath.Join(t.TempDir(), "token")
	writeToken(t, file, token, false)
	consul, err := sd.ConsulConfig{Address: srv.URL, TokenFile: file}.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(consul.(interface{ CloseIdleConnections() }).CloseIdleConnections)
	return stub, file, consul
}

// The token of a token file goes with every request as the file is then:
// a rotation needs no restart, and a 403 is an answer only once the file
// has been read again.
func TestTokenFileIsReadAgain(t *testing.T) {
	clearConsulEnv(t)
	const a, b, c, d = "token-aaaa", "token-bbbb", "token-cccc", "token-dddd" // one size: only the time tells
	stub, file, consul := tokenFileAgent(t, a)
	reg := validRegistration()
	r, err := sd.NewRegistrar(consul, reg, log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	step := func(name string, want ...string) {
		t.Helper()
		n := stub.count()
		if ok, err := r.Registered(ctx); err != nil || !ok {
			t.Fatalf("%s: Registered = %v, %v", name, ok, err)
		}
		if have := stub.requests(n); strings.Join(have, " ") != strings.Join(want, " ") {
			t.Errorf("%s: tokens sent: want %q, have %q", name, want, have)
		}
	}
	if err := r.Register(ctx); err != nil {
		t.Fatal(err)
	}
	step("the file's token", a)

	// Rotation: the new token written, both valid for a while.
	stub.allow(a, b)
	writeToken(t, file, b, false)
	step("the file changed", b)

	// A rewrite that the stamp cannot see, then the old token deleted: the
	// 403 makes the file read again, and the request is sent once more.
	writeToken(t, file, c, true)
	stub.allow(c)
	step("403, file read again", b, c)

	// The same for a request with a body, which must be sent whole again.
	writeToken(t, file, d, true)
	stub.allow(d)
	n := stub.count()
	if err := r.Register(ctx); err != nil {
		t.Fatalf("registration sent again after a 403: %v", err)
	}
	if want, have := []string{c, d}, stub.requests(n); strings.Join(want, " ") != strings.Join(have, " ") {
		t.Errorf("registration: tokens sent: want %q, have %q", want, have)
	}

	// A file that reads empty (half written) keeps the token read last.
	writeToken(t, file, "", false)
	step("empty file", d)

	// A 403 with the token unchanged is the answer: sent once.
	stub.allow()
	n = stub.count()
	_, err = r.Registered(ctx)
	var pe *sd.PermissionError
	if !errors.As(err, &pe) || !sd.Permanent(err) {
		t.Errorf("a 403 for the file's token: want a *PermissionError, have %v", err)
	}
	if want, have := 1, len(stub.requests(n)); want != have {
		t.Errorf("requests for a 403 with the token unchanged: want %d, have %d", want, have)
	}
}

// The agent syncs a service and its checks to the catalog with the token
// they were registered with: after a rotation, KeepRegistered registers
// the instance again with the new token, once.
func TestKeepRegisteredRegistersAgainWithARotatedToken(t *testing.T) {
	clearConsulEnv(t)
	const a, b = "token-aaaa", "token-bbbb"
	stub, file, consul := tokenFileAgent(t, a)
	r, err := sd.NewRegistrar(consul, validRegistration(), log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := r.Register(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.KeepRegistered(ctx, 20*time.Millisecond) }()

	writeToken(t, file, b, false)
	stub.allow(b) // the old token deleted at once
	waitFor(t, 5*time.Second, "registered with the new token", func() bool {
		stub.mu.Lock()
		defer stub.mu.Unlock()
		return stub.registers[b] > 0
	})
	n := stub.count()
	waitFor(t, 5*time.Second, "a few more rounds", func() bool { return stub.count() > n+3 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("KeepRegistered: %v", err)
	}
	stub.mu.Lock()
	defer stub.mu.Unlock()
	if want, have := map[string]int{a: 1, b: 1}, stub.registers; have[a] != want[a] || have[b] != want[b] {
		t.Errorf("registrations by token: want %v, have %v", want, have)
	}
}

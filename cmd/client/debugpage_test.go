package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/internal/proc"
	"github.com/trimkit/trimkit/internal/testenv"
)

// The live page, in a real browser: an instance frozen (SIGSTOP) while
// Consul still passes it (a gray failure: the test registers the instances
// with TTL checks it passes itself) is shown ejected, its peers ready;
// /metrics counts the ejection. The screenshot is kept in
// .run/test-artifacts.
func TestDebugPageInChromiumShowsAFrozenInstanceEjected(t *testing.T) {
	testenv.ChromiumBinary(t) // fail or skip before starting anything
	agent := testenv.Consul(t)
	var ins []*proc.Trimsvc
	var ids []string
	for i := range 3 {
		in := testenv.StartTrimsvc(t, bins.Trimsvc(t), agent.HTTPAddr, "-register=false")
		host, port, _ := net.SplitHostPort(in.Addr)
		p, _ := strconv.Atoi(port)
		id := fmt.Sprintf("trimsvc-page-%d", i)
		reg := &api.AgentServiceRegistration{ID: id, Name: "trimsvc", Address: host, Port: p,
			Check: &api.AgentServiceCheck{CheckID: id, TTL: "10m", Status: api.HealthPassing}}
		if err := agent.API().Agent().ServiceRegister(reg); err != nil {
			t.Fatal(err)
		}
		ins, ids = append(ins, in), append(ids, id)
	}
	agent.WaitPassing("trimsvc", ids...)
	c := testenv.Start(t, bins.Client(t), "-consul-addr", agent.HTTPAddr, "-http-addr", "127.0.0.1:0",
		"-rate", "50", "-duration", "2m", "-retry-timeout", "1s", "x")
	line, err := c.WaitLine("serving /metrics and /debug/trimkit", 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`url=(\S+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no url in %q", line)
	}
	page := m[1]

	frozen := ins[1]
	if err := frozen.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = frozen.Signal(syscall.SIGCONT) }()
	tier := func() map[string]string {
		req, _ := http.NewRequest(http.MethodGet, page, nil)
		req.Header.Set("Accept", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v struct {
			Clients []struct {
				Instances []struct{ Addr, Tier string } `json:"instances"`
			} `json:"clients"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, c := range v.Clients {
			for _, in := range c.Instances {
				out[in.Addr] = in.Tier
			}
		}
		return out
	}
	deadline := time.Now().Add(15 * time.Second)
	for tier()[frozen.Addr] != "ejected" {
		if time.Now().After(deadline) {
			t.Fatalf("the frozen instance %s is not shown ejected within 15s: %v", frozen.Addr, tier())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A few seconds of the charts, for the screenshot.
	time.Sleep(5 * time.Second)
	if tier()[frozen.Addr] != "ejected" {
		t.Fatalf("the frozen instance %s was readmitted: %v", frozen.Addr, tier())
	}
	shot := testenv.ArtifactPath(t, "debug-trimkit-frozen-instance.png")
	testenv.Chromium(t, page, "--window-size=1150,340", "--screenshot="+shot)
	if info, err := os.Stat(shot); err != nil || info.Size() < 10_000 {
		t.Errorf("screenshot %s: %v, %v", shot, info, err)
	}
	t.Logf("screenshot: %s", shot)
	dom := string(testenv.Chromium(t, page, "--dump-dom"))
	row := regexp.MustCompile(`<tr class="[^"]*" data-addr="` + regexp.QuoteMeta(frozen.Addr) + `" data-tier="ejected">\s*<td>[^<]*</td><td class="tier">ejected[^<]*</td>`)
	if !row.MatchString(dom) {
		t.Errorf("the browser's page does not show %s ejected:\n%s", frozen.Addr, dom)
	}
	for _, in := range []*proc.Trimsvc{ins[0], ins[2]} {
		if !strings.Contains(dom, `data-addr="`+in.Addr+`" data-tier="ready"`) {
			t.Errorf("the browser's page does not show %s ready", in.Addr)
		}
	}
	if !strings.Contains(dom, "<svg") || !strings.Contains(dom, "Consul watch at") {
		t.Error("the browser's page lacks its charts or the Consul watch's state")
	}

	resp, err := http.Get(strings.TrimSuffix(page, "/debug/trimkit") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := `trimclient_ejections_total{instance="` + frozen.Addr + `"}`; !strings.Contains(string(metrics), want) {
		t.Errorf("/metrics lacks %s", want)
	}
	_ = frozen.Signal(syscall.SIGCONT)
	_ = c.Signal(syscall.SIGTERM)
}

package client_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"google.golang.org/grpc/codes"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/trimsvc"
)

// pageInstance is an instance as Handler's JSON shows it.
type pageInstance struct {
	Addr              string     `json:"addr"`
	Tier              string     `json:"tier"`
	Ejected           bool       `json:"ejected"`
	NextProbe         *time.Time `json:"next_probe"`
	LatencyMS         float64    `json:"latency_ms"`
	Streams           int64      `json:"streams"`
	Attempts          int64      `json:"attempts"`
	Failures          int64      `json:"failures"`
	AttemptsPerSecond []float64  `json:"attempts_per_second"`
	FailuresPerSecond []float64  `json:"failures_per_second"`
}

// pageJSON reads Handler's JSON and returns the instances of the client
// that holds addr, nil when none does.
func pageJSON(t *testing.T, srv *httptest.Server, addr string) map[string]pageInstance {
	t.Helper()
	_, instances := pageClient(t, srv, addr)
	return instances
}

// pageClient reads Handler's JSON and returns the face and the instances
// of the client that holds addr.
func pageClient(t *testing.T, srv *httptest.Server, addr string) (face string, instances map[string]pageInstance) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	req.Header.Set("Accept", "text/html;q=0.9, application/json")
	req.Close = true // no idle connection left behind for goleak to find
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
	var page struct {
		Clients []struct {
			Face      string         `json:"face"`
			Instances []pageInstance `json:"instances"`
		} `json:"clients"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		t.Fatal(err)
	}
	for _, c := range page.Clients {
		byAddr := map[string]pageInstance{}
		for _, in := range c.Instances {
			byAddr[in.Addr] = in
		}
		if _, ok := byAddr[addr]; ok {
			return c.Face, byAddr
		}
	}
	return "", nil
}

// The page shows what the balancer sees: an instance that fails every call
// ejected until its probe, its peers ready, the attempts of each per second;
// as HTML for people and JSON for programs. A closed client leaves it.
func TestHandlerShowsAnEjectedInstance(t *testing.T) {
	f := newFakes(map[string]endpoint.Endpoint{"page-a:1": ok("a"), "page-b:1": failing(codes.Unavailable), "page-c:1": ok("c")})
	e, err := client.NewEndpointer(kitsd.FixedInstancer{"page-a:1", "page-b:1", "page-c:1"}, f.factory, log.NewNopLogger(),
		client.EndpointerConfig{Ejection: client.Ejection{ConsecutiveFailures: 3, BaseTime: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	call, err := client.Retry(client.NewRoundRobin(e), client.RetryConfig{MaxAttempts: 3, Timeout: time.Second, Budget: noBudget})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(client.Handler())
	defer srv.Close()

	// Calls over two seconds, so that the per-second sampler sees them.
	for deadline := time.Now().Add(2200 * time.Millisecond); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := call(context.Background(), trimsvc.TrimRequest{S: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	page := pageJSON(t, srv, "page-b:1")
	if page == nil {
		t.Fatal("the page does not show the client")
	}
	b := page["page-b:1"]
	if b.Tier != "ejected" || !b.Ejected || b.NextProbe == nil || time.Until(*b.NextProbe) < 30*time.Second || b.Failures < 3 {
		t.Errorf("the failing instance: %+v, want ejected until its probe a minute on, with its failures", b)
	}
	for _, addr := range []string{"page-a:1", "page-c:1"} {
		in := page[addr]
		if in.Tier != "ready" || in.Attempts == 0 || in.LatencyMS <= 0 || len(in.AttemptsPerSecond) == 0 || sum(in.AttemptsPerSecond) == 0 {
			t.Errorf("%s: %+v, want ready with attempts and a latency, and attempts per second charted", addr, in)
		}
	}

	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	html, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("Content-Type %q, want HTML", ct)
	}
	for _, want := range []string{`data-addr="page-b:1" data-tier="ejected"`, "ejected until its probe in", `data-addr="page-a:1" data-tier="ready"`,
		"<svg", "<polyline", `http-equiv="refresh"`} {
		if !strings.Contains(string(html), want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if strings.Contains(string(html), "<script") {
		t.Error("the page runs a script; it is plain HTML")
	}

	resp, err = http.Post(srv.URL, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %s, want 405", resp.Status)
	}

	e.Close()
	if pageJSON(t, srv, "page-b:1") != nil {
		t.Error("a closed client is still on the page")
	}
}

func sum(v []float64) (s float64) {
	for _, x := range v {
		s += x
	}
	return s
}

// A subsetting client shows the listed instances outside its subset, as
// not in it, beside its members.
func TestHandlerShowsTheSubset(t *testing.T) {
	instances := kitsd.FixedInstancer{"subset-a:1", "subset-b:1", "subset-c:1", "subset-d:1"}
	f := newFakes(map[string]endpoint.Endpoint{"subset-a:1": ok("a"), "subset-b:1": ok("b"), "subset-c:1": ok("c"), "subset-d:1": ok("d")})
	e, err := client.NewEndpointer(instances, f.factory, log.NewNopLogger(), endpointerConfig(withSubset(2, 1)))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	srv := httptest.NewServer(client.Handler())
	defer srv.Close()
	page := pageJSON(t, srv, "subset-a:1")
	if page == nil {
		t.Fatal("the page does not show the client")
	}
	tiers := map[string]int{}
	for _, in := range page {
		tiers[in.Tier]++
	}
	if len(page) != 4 || tiers["ready"] != 2 || tiers["not_in_subset"] != 2 {
		t.Errorf("instances by tier: %v of %d; want 2 ready members and 2 not in the subset", tiers, len(page))
	}
}

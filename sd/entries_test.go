package sd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
)

func TestDecodeEntries(t *testing.T) {
	for _, tc := range []struct {
		name string
		json string
		want []Entry
	}{
		{"empty list", ` [ ] `, nil},
		{"null", `null`, nil},
		{"unknown fields skipped, at every level", `[{"Future": {"a": [1, "]}", {"b": null}], "c": "\"{"},
			"Node": {"Node": "n1", "Address": "10.0.0.1", "X": [[], {}], "Meta": {"k": "v"}},
			"Service": {"ID": "s1", "Service": "trim", "Tags": ["a", "b"], "Meta": {"zone": "z1"}, "Port": 8080,
				"Address": "10.0.0.2", "Weights": {"Passing": 1, "Warning": 1}, "Proxy": {"Expose": {}}, "New": true},
			"Checks": [{"CheckID": "serfHealth", "Status": "passing", "Output": "Agent alive and reachable", "Definition": {}}]}]`,
			[]Entry{{ID: "s1", Service: "trim", Node: "n1", Address: "10.0.0.2", Port: 8080, Tags: []string{"a", "b"}, Meta: map[string]string{"zone": "z1"}, Status: "passing"}}},
		{"missing fields: the node's address, no checks", `[{"Node": {"Address": "10.0.0.1"}, "Service": {"ID": "s1", "Port": 1}}, {}]`,
			[]Entry{{ID: "s1", Address: "10.0.0.1", Port: 1, Status: "passing"}, {Status: "passing"}}},
		{"null fields", `[{"Node": null, "Service": {"ID": null, "Tags": null, "Meta": null, "Port": 2, "Address": "h"}, "Checks": null}]`,
			[]Entry{{Address: "h", Port: 2, Status: "passing"}}},
		{"a node with several services", `[
			{"Node": {"Node": "n1", "Address": "10.0.0.1"}, "Service": {"ID": "a", "Service": "trim", "Port": 1}, "Checks": [{"CheckID": "serfHealth", "Status": "passing"}]},
			{"Node": {"Node": "n1", "Address": "10.0.0.1"}, "Service": {"ID": "b", "Service": "trim", "Port": 2}, "Checks": [{"CheckID": "serfHealth", "Status": "passing"}]}]`,
			[]Entry{{ID: "a", Service: "trim", Node: "n1", Address: "10.0.0.1", Port: 1, Status: "passing"},
				{ID: "b", Service: "trim", Node: "n1", Address: "10.0.0.1", Port: 2, Status: "passing"}}},
		{"locality", `[{"Service": {"ID": "l", "Address": "h", "Port": 4, "Locality": {"Region": "us-east-1", "Zone": "us-east-1a", "Other": 1}}}]`,
			[]Entry{{ID: "l", Address: "h", Port: 4, Region: "us-east-1", Zone: "us-east-1a", Status: "passing"}}},
		{"escapes", `[{"Service": {"ID": "a\"b\\c\u00e9\n", "Address": "::1", "Port": 3, "Meta": {"k\u0041": "v\/"}}}]`,
			[]Entry{{ID: "a\"b\\c\u00e9\n", Address: "::1", Port: 3, Meta: map[string]string{"kA": "v/"}, Status: "passing"}}},
		{"worst check wins", `[{"Checks": [{"Status": "passing"}, {"Status": "warning"}, {"Status": "passing"}]},
			{"Checks": [{"Status": "warning"}, {"Status": "critical"}]},
			{"Checks": [{"CheckID": "_node_maintenance", "Status": "critical"}, {"Status": "passing"}]},
			{"Checks": [{"CheckID": "_service_maintenance:x", "Status": "critical"}]},
			{"Checks": [{"Status": "sideways"}, {"Status": "critical"}]}]`,
			[]Entry{{Status: "warning"}, {Status: "critical"}, {Status: "maintenance"}, {Status: "maintenance"}, {Status: ""}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			have, err := newEntryDecoder().decode([]byte(tc.json))
			if err != nil {
				t.Fatal(err)
			}
			for i := range have {
				if want := joinHostPort(have[i].Address, have[i].Port); have[i].hostPort() != want {
					t.Errorf("entry %d: HostPort %q, want %q", i, have[i].hostPort(), want)
				}
				have[i].joined = ""
			}
			if !reflect.DeepEqual(have, tc.want) {
				t.Errorf("have %+v\nwant %+v", have, tc.want)
			}
		})
	}
}

func joinHostPort(host string, port int) string {
	if strings.Contains(host, ":") {
		return fmt.Sprintf("[%s]:%d", host, port)
	}
	return fmt.Sprintf("%s:%d", host, port)
}

func TestDecodeEntriesRefusesMalformedAnswers(t *testing.T) {
	for _, bad := range []string{
		``, `{}`, `[`, `[{`, `[{"Service"`, `[{"Service": {"ID": "a}]`, `[{}`, `[{}]]`, `[{},]`, `[{} {}]`,
		`[{"Service": {"Port": "80"}}]`, `[{"Service": {"Port": 8.5}}]`, `[{"Service": []}]`, `[{"Service": {"Tags": "a"}}]`,
		`[{"Service": {"Meta": {"a": 1}}}]`, `[{"Checks": {}}]`, `[{"Node": {"Address": 5}}]`, `[{"Service": {"ID": "\x"}}]`,
		`[{"a": }]`, `[{"a" 1}]`, `[1]`, `["x"]`, `nul`, `[] x`,
	} {
		if entries, err := newEntryDecoder().decode([]byte(bad)); err == nil {
			t.Errorf("%s: no error, entries %+v", bad, entries)
		}
	}
}

// TestDecodeEntriesMatchesConsulAPI decodes what consul/api's structs
// encode to, and compares with what consul/api decodes from it.
func TestDecodeEntriesMatchesConsulAPI(t *testing.T) {
	answer := healthAnswer(50)
	answer[3].Checks = append(answer[3].Checks, &api.HealthCheck{CheckID: "web", Status: api.HealthWarning, ServiceID: answer[3].Service.ID})
	answer[4].Service.Address = ""
	answer[5].Checks = append(answer[5].Checks, &api.HealthCheck{CheckID: api.NodeMaint, Status: api.HealthCritical})
	answer[6].Service.Locality = &api.Locality{Region: "r1", Zone: "z1"}
	data, err := json.Marshal(answer)
	if err != nil {
		t.Fatal(err)
	}
	var viaAPI []*api.ServiceEntry
	if err := json.Unmarshal(data, &viaAPI); err != nil {
		t.Fatal(err)
	}
	have, err := newEntryDecoder().decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(have) != len(viaAPI) {
		t.Fatalf("%d entries, consul/api %d", len(have), len(viaAPI))
	}
	for i, e := range viaAPI {
		want := entryOf(e)
		want.joined = have[i].joined
		if !reflect.DeepEqual(have[i], want) {
			t.Errorf("entry %d:\nhave %+v\nwant %+v", i, have[i], want)
		}
	}
}

// TestDecodeEntriesReusesUnchangedOnes checks that an answer that repeats
// the last one's entries costs no decoding of them.
func TestDecodeEntriesReusesUnchangedOnes(t *testing.T) {
	answer := healthAnswer(1000)
	first, err := json.Marshal(answer)
	if err != nil {
		t.Fatal(err)
	}
	answer[500].Service.Tags = []string{"changed"}
	second, err := json.Marshal(answer)
	if err != nil {
		t.Fatal(err)
	}
	d := newEntryDecoder()
	fresh := testing.AllocsPerRun(5, func() { _, _ = newEntryDecoder().decode(first) })
	if _, err := d.decode(first); err != nil {
		t.Fatal(err)
	}
	i := 0
	again := testing.AllocsPerRun(5, func() {
		if _, err := d.decode([][]byte{second, first}[i%2]); err != nil {
			t.Fatal(err)
		}
		i++
	})
	entries, err := d.decode(second)
	if err != nil {
		t.Fatal(err)
	}
	if got := entries[500].Tags; len(got) != 1 || got[0] != "changed" {
		t.Fatalf("the changed entry's tags: %v", got)
	}
	if again > fresh/20 {
		t.Errorf("an answer with one changed entry of 1,000: %.0f allocations, a fresh decode %.0f: want at most a twentieth", again, fresh)
	}
	t.Logf("allocations: fresh decode %.0f, one entry changed %.0f", fresh, again)
}

// TestDecodeEntriesFollowsChanges decodes a run of answers, each one
// changed from the one before (entries joining, leaving and changing, at
// the start, the end and between), with one decoder, and checks each
// against a fresh decoder's decoding.
func TestDecodeEntriesFollowsChanges(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	answer := healthAnswer(40)
	d := newEntryDecoder()
	next := 1000
	for step := range 400 {
		switch op := rng.IntN(5); {
		case op == 0 && len(answer) > 0: // one leaves
			i := rng.IntN(len(answer))
			answer = slices.Delete(answer, i, i+1)
		case op == 1: // one joins
			e := healthAnswer(1)[0]
			e.Service.ID, e.Service.Port = fmt.Sprintf("new-%d", next), next
			next++
			i := rng.IntN(len(answer) + 1)
			answer = slices.Insert(answer, i, e)
		case op == 2 && len(answer) > 0: // one changes
			i := rng.IntN(len(answer))
			e := *answer[i]
			svc := *e.Service
			svc.Tags = []string{fmt.Sprint("t", step)}
			e.Service = &svc
			answer[i] = &e
		case op == 3 && len(answer) > 2: // several change, first and last too
			answer[0], answer[len(answer)-1] = answer[len(answer)-1], answer[0]
		case op == 4 && rng.IntN(10) == 0: // all leave
			answer = nil
		}
		data, err := json.Marshal(answer)
		if err != nil {
			t.Fatal(err)
		}
		if step%7 == 0 { // answers are not always compact
			var buf bytes.Buffer
			if err := json.Indent(&buf, data, "", " "); err != nil {
				t.Fatal(err)
			}
			data = buf.Bytes()
		}
		have, err := d.decode(data)
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		want, err := newEntryDecoder().decode(data)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(have, want) {
			t.Fatalf("step %d: following the changes:\n%+v\nafresh:\n%+v", step, have, want)
		}
	}
}

// FuzzDecodeEntries decodes two answers in a row and checks the second
// against a fresh decoder's decoding of it, and that an answer it takes
// has as many entries as its JSON array.
func FuzzDecodeEntries(f *testing.F) {
	two, err := json.Marshal(healthAnswer(2))
	if err != nil {
		f.Fatal(err)
	}
	three, err := json.Marshal(healthAnswer(3))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(two, three)
	f.Add(three, two)
	f.Add([]byte(`[{"Service": {"ID": "a\"b", "Port": 1, "Tags": ["x"]}, "Checks": [{"Status": "warning"}]}]`), []byte(`[{"Service": {"ID": "a\"b", "Port": 1, "Tags": ["x"]}, "Checks": [{"Status": "warning"}]}, {}]`))
	f.Add([]byte(`[{},{}]`), []byte(`[{},{"a":{}},{}]`))
	f.Add([]byte(`[]`), []byte(`[{}]`))
	f.Fuzz(func(t *testing.T, first, second []byte) {
		d := newEntryDecoder()
		_, _ = d.decode(first)
		have, err := d.decode(second)
		want, wantErr := newEntryDecoder().decode(second)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("after %q, %q: error %v; afresh: %v", first, second, err, wantErr)
		}
		if err != nil {
			return
		}
		if !reflect.DeepEqual(have, want) {
			t.Fatalf("after %q, %q:\n%+v\nafresh:\n%+v", first, second, have, want)
		}
		var raw []json.RawMessage
		if json.Valid(second) && json.Unmarshal(second, &raw) == nil && len(raw) != len(have) {
			t.Fatalf("%d entries, the JSON array has %d", len(have), len(raw))
		}
	})
}

// healthAnswer is an answer of n instances as Consul 1.20 gives them, in
// consul/api's structs.
func healthAnswer(n int) []*api.ServiceEntry {
	out := make([]*api.ServiceEntry, n)
	for i := range out {
		node := fmt.Sprintf("node-%d", i%7)
		id := fmt.Sprintf("trimsvc-%d", i)
		out[i] = &api.ServiceEntry{
			Node: &api.Node{ID: "6d1c8c37-4c7a-6c2e-0b5e-7c7b0e1d8f1" + fmt.Sprint(i%7), Node: node, Address: "127.0.0.1", Datacenter: "dc1",
				TaggedAddresses: map[string]string{"lan": "127.0.0.1", "lan_ipv4": "127.0.0.1", "wan": "127.0.0.1", "wan_ipv4": "127.0.0.1"},
				Meta:            map[string]string{"consul-network-segment": "", "consul-version": "1.20.2"}, CreateIndex: 13, ModifyIndex: 15},
			Service: &api.AgentService{ID: id, Service: "trimsvc", Tags: []string{"trim", "v1"}, Meta: map[string]string{"version": "1.0"},
				Port: 20000 + i, Address: "127.0.0.1", Weights: api.AgentWeights{Passing: 1, Warning: 1},
				Proxy: &api.AgentServiceConnectProxyConfig{}, Connect: &api.AgentServiceConnect{}, CreateIndex: uint64(100 + i), ModifyIndex: uint64(100 + i)},
			Checks: api.HealthChecks{{Node: node, CheckID: "serfHealth", Name: "Serf Health Status", Status: api.HealthPassing,
				Output: "Agent alive and reachable", Type: "", CreateIndex: 13, ModifyIndex: 13}},
		}
	}
	return out
}

func BenchmarkDecodeEntries(b *testing.B) {
	answer := healthAnswer(1000)
	data, err := json.Marshal(answer)
	if err != nil {
		b.Fatal(err)
	}
	answer[500].Service.Tags = []string{"changed"}
	changed, err := json.Marshal(answer)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("answer: %d bytes", len(data))
	b.Run("consul-api", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for range b.N {
			var entries []*api.ServiceEntry
			if err := json.Unmarshal(data, &entries); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fresh", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for range b.N {
			if _, err := newEntryDecoder().decode(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("one-changed", func(b *testing.B) {
		d := newEntryDecoder()
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for i := range b.N {
			if _, err := d.decode([][]byte{data, changed}[i%2]); err != nil {
				b.Fatal(err)
			}
		}
	})
}

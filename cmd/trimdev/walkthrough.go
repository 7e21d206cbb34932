package main

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/trimkit/trimkit/internal/localconsul"
)

// walkStep is one step of the cluster walkthrough: what it shows, and the
// commands a user types for it. The list (walkSteps) is the one source of
// the walkthrough: `make cluster` prints it, docs/cluster.md shows it (a
// test checks that the two agree), and `trimdev walkthrough` runs it,
// command by command, under load.
type walkStep struct {
	say  []string // comment lines, the first numbered
	cmds []walkCmd
}

// walkCmd is one command of a step, a line of shell. In line, {{NAME}}
// stands for a value of the running cluster (walkVars).
type walkCmd struct {
	line string
	note string // a comment printed after the line
	// load is the walkthrough's load: another terminal, for the whole
	// walkthrough. trimdev walkthrough runs it in the background.
	load bool
	// fails, when set, is text the command's failure must show: it is
	// refused, and says why.
	fails string
}

// walkSteps is the walkthrough, in the order it is run. Each step puts
// back what it breaks before the next.
func walkSteps() []walkStep {
	return []walkStep{
		{say: []string{"load through client agent 2 (in another terminal, after the same source); no call fails in the steps below"},
			cmds: []walkCmd{{line: "go run ./cmd/client -rate 200 -duration 3m -balancer p2c x", load: true}}},
		{say: []string{"every member, its pid, and how the cluster sees it (serf, raft, leader, checks)"},
			cmds: []walkCmd{{line: "{{demo status}}"}}},
		{say: []string{
			"kill the leader ({{leader}} now) with SIGKILL: the others elect a new one within a few seconds, and",
			"autopilot removes the dead server 5-10s after the kill (status: serf left, raft -)"},
			cmds: []walkCmd{{line: "{{demo kill}} {{leader}}"}}},
		{say: []string{
			"start it again on its address, ports and data directory; restart waits until it is a voter again:",
			"about 3s before autopilot removed it, 15-20s after (a non-voter first, promoted after 10s of health)"},
			cmds: []walkCmd{{line: "{{demo restart}} {{leader}}"}}},
		{say: []string{"stop two servers: quorum lost; known instances keep answering, and a new caller still finds them (stale reads)..."},
			cmds: []walkCmd{
				{line: "{{demo stop}} server-1 server-2"},
				{line: "sleep 3", note: "the last server steps down"},
				{line: "go run ./cmd/client x"},
				{line: "go run ./cmd/client -read leader x", note: "... unless it insists on the leader", fails: "no leader"},
				{line: "{{demo restart}} server-1 server-2"},
			}},
		{say: []string{"restart the instances' agent: leave_on_terminate drops their registrations from the catalog until it is",
			"back; the callers hold the instances alive on their connections meanwhile (fail-static)"},
			cmds: []walkCmd{{line: "{{demo restart}} client-1"}}},
		{say: []string{"an instance: SIGKILL, then start it again on its address"},
			cmds: []walkCmd{{line: "{{demo kill}} trimsvc-2 && {{demo restart}} trimsvc-2"}}},
		{say: []string{"without a token, or without the instances' CA: refused, and told why"},
			cmds: []walkCmd{
				{line: "CONSUL_HTTP_TOKEN_FILE= go run ./cmd/client x", fails: "ACL"},
				{line: "TRIMCLIENT_TLS_CA_FILE= TRIMCLIENT_TLS_CERT_FILE= TRIMCLIENT_TLS_KEY_FILE= go run ./cmd/client x", fails: "TLS"},
			}},
		{say: []string{"the consul CLI, with the bootstrap token"},
			cmds: []walkCmd{{line: "CONSUL_HTTP_TOKEN_FILE={{dir}}/management.token bin/consul members"}}},
	}
}

// datacentersSteps is what `make cluster DCS=2` prints to try, in the
// order to run them, instead of walkSteps, whose step that takes dc1's
// quorum away expects a caller insisting on the leader to be refused: a
// caller of both datacenters (client.env names them) would be answered by
// dc2.
func datacentersSteps() []walkStep {
	return []walkStep{
		{say: []string{"load through dc1's client agent 2 (in another terminal, after the same source), calling dc1 and, when too",
			"few of its instances are healthy, dc2 (client.env sets TRIMCLIENT_DATACENTERS=dc1,dc2 too); no call fails below"},
			cmds: []walkCmd{{line: "go run ./cmd/client -datacenters dc1,dc2 -rate 200 -duration 3m -balancer p2c -http-addr 127.0.0.1:8977 x", load: true,
				note: "http://127.0.0.1:8977/debug/trimkit: each datacenter's share, live"}}},
		{say: []string{"both datacenters, as either side knows them"},
			cmds: []walkCmd{
				{line: "bin/consul catalog datacenters", note: "through dc1's client agent 2"},
				{line: "CONSUL_HTTP_ADDR={{dc2 agent}} bin/consul catalog datacenters", note: "through dc2's client agent 2"},
			}},
		{say: []string{"dc2's instances, passing, through dc1's client agent 2 with the callers' token (made in dc1, replicated to dc2)"},
			cmds: []walkCmd{
				{line: `curl -s --cacert "$CONSUL_CACERT" --cert "$CONSUL_CLIENT_CERT" --key "$CONSUL_CLIENT_KEY" -H "X-Consul-Token: $(cat "$CONSUL_HTTP_TOKEN_FILE")" "$CONSUL_HTTP_ADDR/v1/health/service/trimsvc?dc=dc2&passing=1" | grep -o '"ID":"dc2-trimsvc-[0-9]*"'`},
				{line: "go run ./cmd/client -datacenters dc2 -n 300 x", note: "answered by dc2's instances alone"},
			}},
		{say: []string{"every instance of dc1 killed (SIGKILL): the calls go to dc2 at once; started again, they come back to dc1"},
			cmds: []walkCmd{
				{line: "{{demo kill}} {{dc1 instances}}"},
				{line: "{{demo restart}} {{dc1 instances}}"},
			}},
		{say: []string{"dc2's servers killed: dc1 goes on, the callers hold dc2's instances they knew; started again (the first",
			"alone has no quorum, the second brings one back)"},
			cmds: []walkCmd{
				{line: "{{demo kill}} {{dc2 servers}}"},
				{line: "{{demo restart}} {{dc2 servers}}"},
			}},
		{say: []string{"every member of both datacenters, its pid, and how its datacenter sees it"},
			cmds: []walkCmd{{line: "{{demo status}}"}}},
	}
}

// walkVars fills in a walkthrough's commands for the state in dir, whose
// servers leader leads.
func walkVars(dir, leader string) *strings.Replacer {
	return strings.NewReplacer(
		"{{demo status}}", demoCommand(dir, "status"),
		"{{demo kill}}", demoCommand(dir, "kill"),
		"{{demo stop}}", demoCommand(dir, "stop"),
		"{{demo restart}}", demoCommand(dir, "restart"),
		"{{leader}}", leader,
		"{{dir}}", dir,
	)
}

// printWalkthrough prints the walkthrough's steps for the state in dir.
func printWalkthrough(w io.Writer, dir, leader string) {
	printSteps(w, dir, walkVars(dir, leader), walkSteps())
}

// printSteps prints steps, to try on the state in dir, filled in with
// vars.
func printSteps(w io.Writer, dir string, vars *strings.Replacer, steps []walkStep) {
	fmt.Fprintf(w, "  source %s\n", filepath.Join(dir, "client.env"))
	for i, s := range steps {
		for j, line := range s.say {
			if j == 0 {
				fmt.Fprintf(w, "  # %d. %s\n", i+1, vars.Replace(line))
			} else {
				fmt.Fprintf(w, "  #    %s\n", vars.Replace(line))
			}
		}
		for _, c := range s.cmds {
			line := vars.Replace(c.line)
			if c.note != "" {
				line = fmt.Sprintf("%-40s # %s", line, c.note)
			}
			fmt.Fprintf(w, "  %s\n", line)
		}
	}
}

// datacentersVars fills in datacentersSteps for the state in dir, whose
// setup is f's.
func datacentersVars(dir string, f *fleet) *strings.Replacer {
	names := func(procs []*stateProc) string {
		var names []string
		for _, p := range procs {
			names = append(names, p.Name)
		}
		return strings.Join(names, " ")
	}
	var servers []*stateProc
	for _, p := range inDatacenter(f.st.Consul, "dc2") {
		if a := f.agent(p.Name); a != nil && a.IsServer() {
			servers = append(servers, p)
		}
	}
	dc2Agent := ""
	if c := f.clusterIn("dc2"); c != nil {
		dc2Agent = c.Clients[len(c.Clients)-1].URL()
	}
	return strings.NewReplacer(
		"{{demo status}}", demoCommand(dir, "status"),
		"{{demo kill}}", demoCommand(dir, "kill"),
		"{{demo restart}}", demoCommand(dir, "restart"),
		"{{dc1 instances}}", names(inDatacenter(f.st.Instances, "dc1")),
		"{{dc2 servers}}", names(servers),
		"{{dc2 agent}}", dc2Agent,
	)
}

// printCluster prints what cluster left running and the walkthrough.
func printCluster(w io.Writer, setup consulSetup, f *fleet, leader string) {
	st := f.st
	dcs := setup.datacenters()
	if len(dcs) == 0 {
		fmt.Fprintln(w, "cluster: 3 consul servers and 2 client agents on loopback: gossip encrypted, TLS everywhere (HTTPS only,")
		fmt.Fprintln(w, "client certificates required), ACLs default-deny")
	} else {
		fmt.Fprintf(w, "cluster: %d datacenters, %s, WAN-federated, each of 3 consul servers and 2 client agents on loopback: gossip\n", len(dcs), strings.Join(dcs, " and "))
		fmt.Fprintln(w, "encrypted (one key, LAN and WAN), TLS everywhere (HTTPS only, client certificates required; one CA, each")
		fmt.Fprintf(w, "server's certificate for its datacenter, server.DC.consul), ACLs default-deny: %s is the primary, whose tokens and\n", dcs[0])
		fmt.Fprintf(w, "policies %s's servers replicate (enable_token_replication, with a replication token made in %s)\n", strings.Join(dcs[1:], " and "), dcs[0])
	}
	width := 10
	for _, a := range setup.agents {
		width = max(width, len(a.Name))
	}
	for _, a := range setup.agents {
		rpc := "-"
		if a.IsServer() {
			rpc = a.ServerAddr
		}
		fmt.Fprintf(w, "  %-*s pid %-7d %-24s server rpc %-16s log %s\n", width, a.Name, a.PID(), a.URL(), rpc, a.LogPath)
	}
	through := setup.svcAgent.Name
	if len(dcs) > 0 {
		var agents []string
		for _, c := range append([]*localconsul.Cluster{setup.cluster}, setup.federated...) {
			agents = append(agents, fmt.Sprintf("%s in %s", c.Clients[0].Name, c.Datacenter))
		}
		through = strings.Join(agents, " and ")
	}
	fmt.Fprintf(w, "instances, registered through %s over TLS, each with a token of its own, serving mutual TLS with the service CA:\n", through)
	printInstances(w, st)
	printTracing(w, st)
	dir := filepath.Dir(setup.clientEnv)
	downCmd := "make down"
	if filepath.Clean(dir) != ".run" {
		downCmd = demoCommand(dir, "down")
	}
	tokens, env, consulDirs := "", "", ""
	if len(dcs) > 0 {
		tokens = "; dc2-trimsvc-N.token: dc2's instance N's"
		env = fmt.Sprintf(",\n                    and the datacenters to call, in order (TRIMCLIENT_DATACENTERS=%s)", strings.Join(dcs, ","))
		consulDirs = "\n  consul-dc2/       dc2's members, their data and logs (dc1's are in consul/); Consul's CA made their\n                    certificates too, for dc2 (consul tls cert create -dc dc2)"
	}
	fmt.Fprintf(w, `files in %[1]s:
  trimsvc-N.token   instance N's token (-consul-token-file): service:write on trimsvc, key:write on its own
                    load report key only, session:write on its node only%[6]s
  client.token      service:read on trimsvc, node:read: what callers use (CONSUL_HTTP_TOKEN_FILE)
  management.token  the bootstrap token: for the UI and the consul CLI, not for services
  client.env        the variables for callers: client agent 2, its CA, a client certificate, client.token,
                    and the service CA and client certificate for calling the instances (TRIMCLIENT_TLS_*)%[7]s
  consul/ca/        Consul's CA (consul tls ca create) and the agents' and CLI's certificates (consul tls cert create)%[8]s
  service-ca/       the service's own CA, apart from Consul's: each instance's server certificate (its
                    address, server-auth usage) and the callers' client certificate (client-auth usage)
UI: %[2]s/ui/ (client agent 2; log in with management.token). Every agent asks each HTTPS client, a browser
too, for a certificate of Consul's CA (verify_incoming), so the CA alone is refused:
  curl --cacert %[3]s --cert %[4]s --key %[5]s %[2]s/ui/
  for a browser, bundle the CLI certificate and import it (password trimkit), and trust Consul's CA:
  openssl pkcs12 -export -in %[4]s -inkey %[5]s -out %[1]s/ui-client.p12 -passout pass:trimkit
`, dir, setup.callAgent.URL(), st.Caller.ConsulCA, st.Caller.ConsulCert, st.Caller.ConsulKey, tokens, env, consulDirs)
	if len(dcs) == 0 {
		fmt.Fprintf(w, "callers ask %s; try, in this order (each step puts back what it breaks; make walkthrough runs them all):\n", setup.callAgent.Name)
		printWalkthrough(w, dir, leader)
	} else {
		fmt.Fprintf(w, "callers ask %s of %s, for both datacenters; try, in this order (each step puts back what it breaks):\n", setup.callAgent.Name, dcs[0])
		printSteps(w, dir, datacentersVars(dir, f), datacentersSteps())
	}
	fmt.Fprintf(w, "then: %s   (seconds, quorum or not; a failed start stops what it started and keeps its logs in %s/failed-TIME/)\n",
		downCmd, dir)
}

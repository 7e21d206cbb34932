package main

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
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
	vars := walkVars(dir, leader)
	fmt.Fprintf(w, "  source %s\n", filepath.Join(dir, "client.env"))
	for i, s := range walkSteps() {
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

// printCluster prints what cluster left running and the walkthrough.
func printCluster(w io.Writer, setup consulSetup, f *fleet, leader string) {
	st := f.st
	fmt.Fprintln(w, "cluster: 3 consul servers and 2 client agents on loopback: gossip encrypted, TLS everywhere (HTTPS only,")
	fmt.Fprintln(w, "client certificates required), ACLs default-deny")
	for _, a := range setup.agents {
		rpc := "-"
		if a.IsServer() {
			rpc = a.ServerAddr
		}
		fmt.Fprintf(w, "  %-10s pid %-7d %-24s server rpc %-16s log %s\n", a.Name, a.PID(), a.URL(), rpc, a.LogPath)
	}
	fmt.Fprintf(w, "instances, registered through %s over TLS, each with a token of its own, serving mutual TLS with the service CA:\n", setup.svcAgent.Name)
	printInstances(w, st)
	printTracing(w, st)
	dir := filepath.Dir(setup.clientEnv)
	downCmd := "make down"
	if filepath.Clean(dir) != ".run" {
		downCmd = demoCommand(dir, "down")
	}
	fmt.Fprintf(w, `files in %[1]s:
  trimsvc-N.token   instance N's token (-consul-token-file): service:write on trimsvc, key:write on its own
                    load report key only, session:write on its node only
  client.token      service:read on trimsvc, node:read: what callers use (CONSUL_HTTP_TOKEN_FILE)
  management.token  the bootstrap token: for the UI and the consul CLI, not for services
  client.env        the variables for callers: client agent 2, its CA, a client certificate, client.token,
                    and the service CA and client certificate for calling the instances (TRIMCLIENT_TLS_*)
  consul/ca/        Consul's CA (consul tls ca create) and the agents' and CLI's certificates (consul tls cert create)
  service-ca/       the service's own CA, apart from Consul's: each instance's server certificate (its
                    address, server-auth usage) and the callers' client certificate (client-auth usage)
UI: %[2]s/ui/ (client agent 2; log in with management.token). Every agent asks each HTTPS client, a browser
too, for a certificate of Consul's CA (verify_incoming), so the CA alone is refused:
  curl --cacert %[3]s --cert %[4]s --key %[5]s %[2]s/ui/
  for a browser, bundle the CLI certificate and import it (password trimkit), and trust Consul's CA:
  openssl pkcs12 -export -in %[4]s -inkey %[5]s -out %[1]s/ui-client.p12 -passout pass:trimkit
callers ask %[6]s; try, in this order (each step puts back what it breaks; make walkthrough runs them all):
`, dir, setup.callAgent.URL(), st.Caller.ConsulCA, st.Caller.ConsulCert, st.Caller.ConsulKey, setup.callAgent.Name)
	printWalkthrough(w, dir, leader)
	fmt.Fprintf(w, "then: %s   (seconds, quorum or not; a failed start stops what it started and keeps its logs in %s/failed-TIME/)\n",
		downCmd, dir)
}

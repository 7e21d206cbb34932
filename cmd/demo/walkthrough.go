package main

import (
	"fmt"
	"io"
	"path/filepath"
)

// printCluster prints what cluster left running and a walkthrough whose
// steps work in the order printed: each member it stops is started again
// before the next step needs it.
func printCluster(w io.Writer, setup consulSetup, f *fleet) {
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
	dir := filepath.Dir(setup.clientEnv)
	cmd := func(sub string) string { return demoCommand(dir, sub) }
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
callers ask %[6]s; try, in this order (each step puts back what it breaks):
  source %[7]s
  # 1. load through client agent 2 (in another terminal, after the same source); no call fails in the steps below
  go run ./cmd/client -rate 200 -duration 3m -balancer p2c x
  # 2. every member, its pid, and how the cluster sees it (serf, raft, leader, checks)
  %[8]s
  # 3. kill the leader (SIGKILL): a new leader in about 2s; autopilot soon removes the dead server (serf: left)
  %[9]s leader
  # 4. start it again on its address, ports and data directory: it rejoins, and autopilot makes it a voter
  #    after 10s of health (restart waits for that)
  %[10]s server-N        (the server step 3 killed)
  # 5. stop two servers: quorum lost; known instances keep answering, and a new caller still finds them (stale reads)...
  %[11]s server-1 server-2
  sleep 3     # the last server steps down
  go run ./cmd/client x
  # ... unless it insists on the leader
  go run ./cmd/client -read leader x
  %[10]s server-1 server-2
  # 6. restart the instances' agent: leave_on_terminate drops their registrations from the catalog until it is back
  %[10]s client-1
  # 7. an instance: SIGKILL, then start it again on its address
  %[9]s trimsvc-2 && %[10]s trimsvc-2
  # without a token, or without the instances' CA: refused, and told why
  CONSUL_HTTP_TOKEN_FILE= go run ./cmd/client x
  TRIMCLIENT_TLS_CA_FILE= TRIMCLIENT_TLS_CERT_FILE= TRIMCLIENT_TLS_KEY_FILE= go run ./cmd/client x
  # the consul CLI, with the bootstrap token
  CONSUL_HTTP_TOKEN_FILE=%[1]s/management.token bin/consul members
then: %[12]s   (seconds, quorum or not; a failed start stops what it started and keeps its logs in %[1]s/failed-TIME/)
`, dir, setup.callAgent.URL(), st.Caller.ConsulCA, st.Caller.ConsulCert, st.Caller.ConsulKey, setup.callAgent.Name, setup.clientEnv,
		cmd("status"), cmd("kill"), cmd("restart"), cmd("stop"), downCmd)
}

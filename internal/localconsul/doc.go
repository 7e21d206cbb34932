// Package localconsul runs Consul on loopback for trimkit's demo, tests and
// benchmarks: a dev agent (New, Start), a cluster of servers and client
// agents (NewCluster), or clusters in several datacenters federated over
// the WAN (NewFederation), optionally with TLS and default-deny ACLs
// (Security), each member on free ports with its own data directory,
// stopped by PID. An agent's ports are claimed below the kernel's
// ephemeral range until Close, so that it restarts on them (see
// portBlock). It also holds the one wait for passing instances
// (WaitPassing). Package testenv wraps it for tests.
package localconsul

// Package netaddr picks the address a server registers in Consul from the
// one it listens on.
package netaddr

// Package dnssd finds a service's instances through a Consul agent's DNS
// interface: the discovery client.Config's Discovery "dns" builds.
package dnssd

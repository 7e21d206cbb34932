// Package consulname holds what trimkit's packages agree on about names
// and keys in Consul: the service names, IDs, tags and meta keys trimkit
// accepts, and where instances' load reports live in KV.
package consulname

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// What Consul's names and IDs may be. Consul's HTTP API puts service names
// and IDs in URL paths, and the consul/api package puts them there as they
// are: an ID such as "x/../y" would address another instance. Rather than
// escape them (consul/api would escape the escapes), trimkit accepts only
// names and IDs that need no escaping, and says so at once.
var (
	// A service name is a DNS label, so that Consul's DNS interface can
	// find it (<name>.service.consul).
	nameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
	// A service ID may also hold the characters of an address (host:port,
	// an IPv6 host) and underscores and dots, but is never "." or "..".
	idRE = regexp.MustCompile(`^[A-Za-z0-9_.:\[\]-]{1,256}$`)
	// A tag travels in a query string, which consul/api escapes: anything
	// printable but spaces and commas (lists of tags are comma-separated).
	tagRE = regexp.MustCompile(`^[[:graph:]]{1,255}$`)
	// Consul's own rule for meta keys.
	metaKeyRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)
)

// ValidServiceName returns an error unless name is a valid service name:
// a DNS label (letters, digits and inner hyphens, at most 63 characters).
func ValidServiceName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("service name %q: must be a DNS label: letters, digits and inner hyphens, at most 63 characters", name)
	}
	return nil
}

// ValidServiceID returns an error unless id is a valid service ID:
// letters, digits, and . _ - : [ ], at most 256, and not "." or "..".
func ValidServiceID(id string) error {
	if !idRE.MatchString(id) || id == "." || id == ".." {
		return fmt.Errorf(`service ID %q: must be letters, digits and . _ - : [ ] (at most 256), and not "." or ".."`, id)
	}
	return nil
}

// ValidTag returns an error unless tag is a valid tag: printable ASCII
// without spaces or commas, at most 255. (To be found through Consul's DNS
// interface, as <tag>.<name>.service.consul, it must also be a DNS label.)
func ValidTag(tag string) error {
	if !tagRE.MatchString(tag) || strings.Contains(tag, ",") {
		return fmt.Errorf("tag %q: must be printable ASCII without spaces or commas (at most 255)", tag)
	}
	return nil
}

// NearAgent, as the node to sort by distance from (Consul's ?near=),
// stands for the agent's own node.
const NearAgent = "_agent"

// ValidNodeName returns an error unless name can name a node to sort by
// distance from: not empty, "." or "..", and without / ? # % & = \,
// spaces or line ends, which would need escaping where Consul's API puts
// it. NearAgent is one.
func ValidNodeName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/?#%&=\\ \t\r\n") {
		return fmt.Errorf(`node name %q: must not be empty, "." or "..", nor hold / ? # %% & = \ or white space`, name)
	}
	return nil
}

// ValidMetaKey returns an error unless key is a valid meta key, as Consul
// has it: letters, digits, _ and -, at most 128, not starting with
// "consul-" (reserved).
func ValidMetaKey(key string) error {
	if !metaKeyRE.MatchString(key) || strings.HasPrefix(key, "consul-") {
		return fmt.Errorf("meta key %q: must be letters, digits, _ and - (at most 128), not starting with consul-", key)
	}
	return nil
}

// LoadPrefix is where the load reports of service's instances are in KV.
func LoadPrefix(service string) string { return "trimkit/load/" + service + "/" }

// LoadKey is the KV key of instance id's load report.
func LoadKey(service, id string) string { return LoadPrefix(service) + id }

// LoadTTL is the session TTL of load reports every interval: three
// intervals, at least Consul's minimum of 10s.
func LoadTTL(interval time.Duration) time.Duration { return max(10*time.Second, 3*interval) }

// UnreachableHint says what to do about a Consul agent that cannot be
// reached. An sd.Instancer adds it to the first NoInstancesError it makes
// for that reason (NoInstancesError.Hint), and a client's Endpointer to
// the first log line that says so.
const UnreachableHint = "is the agent running? set CONSUL_HTTP_ADDR (or the client's Consul address) to point at another"

// DefaultServiceID is the ID of an instance of service name reached at
// host and port whose registration names none: "<name>-<host>-<port>",
// unique on an agent as long as one instance listens on each address.
func DefaultServiceID(name, host string, port int) string {
	return fmt.Sprintf("%s-%s-%d", name, host, port)
}

// Read modes: who answers a watch's queries (sd.Read.Mode's values).
const (
	ReadStale  = "stale"
	ReadLeader = "leader"
	ReadCache  = "cache"
)

// ValidRead reports a read mode out of range ("" is ReadStale), a
// negative maxStale, or a maxStale with a mode that does not take it:
// sd.Read's rules, which client.Config checks too.
func ValidRead(mode string, maxStale time.Duration) error {
	if mode == "" {
		mode = ReadStale
	}
	switch mode {
	case ReadStale, ReadLeader, ReadCache:
	default:
		return fmt.Errorf("read mode %q: must be stale, leader or cache", mode)
	}
	if maxStale < 0 {
		return fmt.Errorf("MaxStale %v: must not be negative", maxStale)
	}
	if maxStale != 0 && mode != ReadStale {
		return fmt.Errorf("MaxStale %v: only stale reads take it, not %s", maxStale, mode)
	}
	return nil
}

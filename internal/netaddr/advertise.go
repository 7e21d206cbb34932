package netaddr

import (
	"fmt"
	"net"
	"strconv"
)

// Advertise returns the host and port to register in Consul for a server
// listening on listen, "host:port" with the port bound (what
// net.Listener.Addr().String() gives), when the operator asked for
// advertise, "host" or "host:port", or nothing ("").
//
// The host is advertise's when it names one; else listen's when that is a
// specific address or a name; else, for a wildcard listener (":0",
// "0.0.0.0", "[::]"), the host's first IPv4 address that is neither
// loopback nor link-local, or 127.0.0.1 on a host without one. The port is advertise's
// when it names one, else listen's (0 when listen names none: the caller
// decides whether it can register that).
func Advertise(listen, advertise string) (host string, port int, err error) {
	listenHost, p, err := net.SplitHostPort(listen)
	if err != nil {
		return "", 0, fmt.Errorf("listen address %q: %w", listen, err)
	}
	if port, err = strconv.Atoi(p); err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("listen address %q: bad port", listen)
	}
	if advertise != "" {
		host = advertise
		if h, p, err := net.SplitHostPort(advertise); err == nil {
			n, err := strconv.Atoi(p)
			if err != nil || n <= 0 || n > 65535 {
				return "", 0, fmt.Errorf("advertise address %q: bad port", advertise)
			}
			host, port = h, n
		}
		if host == "" {
			return "", 0, fmt.Errorf("advertise address %q: empty host", advertise)
		}
		return host, port, nil
	}
	if ip := net.ParseIP(listenHost); listenHost != "" && (ip == nil || !ip.IsUnspecified()) {
		return listenHost, port, nil
	}
	return defaultAdvertiseIP(), port, nil
}

// defaultAdvertiseIP is the host's first IPv4 address that is neither
// loopback nor link-local, else 127.0.0.1.
func defaultAdvertiseIP() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "127.0.0.1"
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	return "127.0.0.1"
}

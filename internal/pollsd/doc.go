// Package pollsd finds a service's instances by asking Consul again and
// again, where a blocking query cannot be had: through its DNS interface
// (client.Config's Discovery "dns") or by running a prepared query
// (Discovery "query"). Both are go-kit dnssrv Instancers underneath, whose
// lookup this package supplies.
package pollsd

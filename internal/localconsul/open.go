package localconsul

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// clusterFile is what a cluster records in its directory, cluster.json, so
// that another process can start its members again (OpenCluster): where
// each member is, and the TLS files and tokens of a secure cluster.
type clusterFile struct {
	Members  []memberFile  `json:"members"`
	Security *securityFile `json:"security,omitempty"`
	// Datacenter and Primary are a Federation's datacenter's name and its
	// primary's; "" for a cluster of its own.
	Datacenter string `json:"datacenter,omitempty"`
	Primary    string `json:"primary_datacenter,omitempty"`
}

type memberFile struct {
	Name        string `json:"name"`
	Server      bool   `json:"server"`
	Dir         string `json:"dir"`
	HTTPAddr    string `json:"http_addr"`
	DNSPort     int    `json:"dns_port"`
	SerfLANAddr string `json:"serf_lan_addr"`
	ServerAddr  string `json:"server_addr"`
	SerfWANAddr string `json:"serf_wan_addr,omitempty"`
}

type securityFile struct {
	CADir           string `json:"ca_dir"`
	CACertFile      string `json:"ca_cert_file"`
	CAKeyFile       string `json:"ca_key_file"`
	CLICertFile     string `json:"cli_cert_file"`
	CLIKeyFile      string `json:"cli_key_file"`
	ManagementToken string `json:"management_token"`
	AgentToken      string `json:"agent_token"`
	// ReplicationToken is a federation's (Security.ReplicationToken).
	ReplicationToken string `json:"replication_token,omitempty"`
}

func clusterPath(dir string) string { return filepath.Join(dir, "cluster.json") }

// save writes cluster.json; it holds the management token, so only its
// owner may read it.
func (c *Cluster) save() error {
	f := clusterFile{Primary: c.primary}
	if c.primary != "" {
		f.Datacenter = c.Datacenter
	}
	for _, a := range c.Members() {
		f.Members = append(f.Members, memberFile{Name: a.Name, Server: a.opts.Member.Server, Dir: a.dir,
			HTTPAddr: a.HTTPAddr, DNSPort: a.DNSPort, SerfLANAddr: a.SerfLANAddr, ServerAddr: a.ServerAddr, SerfWANAddr: a.SerfWANAddr})
	}
	if s := c.Security; s != nil {
		f.Security = &securityFile{CADir: s.CA.dir, CACertFile: s.CA.CertFile, CAKeyFile: s.CA.key,
			CLICertFile: s.CLICertFile, CLIKeyFile: s.CLIKeyFile, ManagementToken: s.ManagementToken, AgentToken: s.AgentToken,
			ReplicationToken: s.ReplicationToken}
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(clusterPath(c.dir), b, 0o600); err != nil {
		return fmt.Errorf("record the cluster: %w", err)
	}
	return nil
}

// OpenCluster returns the cluster that NewCluster prepared in dir, perhaps
// in another process, to start its members again: each on its own
// address, ports and data directory, in a session of its own (Detach), so
// that it outlives the caller as the cluster's other members do. Its
// members' processes are not the caller's: Running is false for each
// until the caller starts it, and a member still running must be stopped
// by its PID before it is started again.
func OpenCluster(bin, dir string) (*Cluster, error) {
	b, err := os.ReadFile(clusterPath(dir))
	if err != nil {
		return nil, fmt.Errorf("open cluster: %w", err)
	}
	var f clusterFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("open cluster %s: %w", clusterPath(dir), err)
	}
	if len(f.Members) == 0 {
		return nil, errors.New("open cluster: no members recorded in " + clusterPath(dir))
	}
	c := &Cluster{dir: dir, Datacenter: defaultDatacenter, primary: f.Primary}
	if f.Datacenter != "" {
		c.Datacenter = f.Datacenter
	}
	if s := f.Security; s != nil {
		c.Security = &Security{CA: &CA{CertFile: s.CACertFile, bin: bin, dir: s.CADir, key: s.CAKeyFile},
			ManagementToken: s.ManagementToken, AgentToken: s.AgentToken, ReplicationToken: s.ReplicationToken,
			CLICertFile: s.CLICertFile, CLIKeyFile: s.CLIKeyFile}
	}
	for _, m := range f.Members {
		a := &Agent{
			Name: m.Name, HTTPAddr: m.HTTPAddr, DNSPort: m.DNSPort, SerfLANAddr: m.SerfLANAddr, ServerAddr: m.ServerAddr,
			SerfWANAddr: m.SerfWANAddr,
			LogPath:     filepath.Join(m.Dir, "consul.log"),
			bin:         bin, dir: m.Dir, config: filepath.Join(m.Dir, "agent.hcl"),
			opts: Options{Detach: true, Security: c.Security, Datacenter: f.Datacenter, PrimaryDatacenter: f.Primary,
				Member: &Member{Name: m.Name, Server: m.Server}},
			started: true, // its ports are the ones its peers know
		}
		if m.Server {
			c.Servers = append(c.Servers, a)
		} else {
			c.Clients = append(c.Clients, a)
		}
	}
	return c, nil
}

// Member returns the member named name, or nil.
func (c *Cluster) Member(name string) *Agent {
	for _, a := range c.Members() {
		if a.Name == name {
			return a
		}
	}
	return nil
}

// Dir is the cluster's directory, where OpenCluster finds it.
func (c *Cluster) Dir() string { return c.dir }

// IsServer reports whether the agent is a cluster's server.
func (a *Agent) IsServer() bool { return a.opts.Member != nil && a.opts.Member.Server }

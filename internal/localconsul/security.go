package localconsul

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/internal/ctxtime"
)

// Security is TLS and default-deny ACLs for local agents: a CA made with
// `consul tls`, a certificate for every agent (HTTPS only, verify_incoming
// and verify_outgoing, server hostnames verified, the agent's own
// certificate presented to TLS health checks), and ACL tokens known in
// advance: the management token (initial_management) and the agents' own.
type Security struct {
	CA *CA
	// ManagementToken is the bootstrap token: the helpers' API clients use
	// it, never the tests' services and callers.
	ManagementToken string
	// AgentToken is the agents' own token (node:write), a secret chosen in
	// advance so that it can go into every agent's configuration; a
	// Cluster creates it once its servers have a leader, before any client
	// agent starts (see Cluster.Start), and a secure dev agent once it has
	// elected itself (see Agent.Start).
	AgentToken string
	// ReplicationToken is the token with which the servers of a secondary
	// datacenter replicate the primary's ACLs (see Federation), a secret
	// chosen in advance as AgentToken is; "" for a single datacenter.
	ReplicationToken string
	// CLICertFile and CLIKeyFile are a certificate for calling agents'
	// HTTPS API, which asks for one (verify_incoming).
	CLICertFile, CLIKeyFile string
}

// NewSecurity makes a CA in dir/ca, a CLI certificate and the tokens.
func NewSecurity(bin, dir string) (*Security, error) {
	ca, err := NewCA(bin, filepath.Join(dir, "ca"))
	if err != nil {
		return nil, err
	}
	cert, key, err := ca.Cert("cli")
	if err != nil {
		return nil, err
	}
	return &Security{CA: ca, ManagementToken: newUUID(), AgentToken: newUUID(), CLICertFile: cert, CLIKeyFile: key}, nil
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// hcl is an agent's TLS and ACL configuration. The servers of the primary
// datacenter (or of the only one) bootstrap the ACL system with the
// management token; those of a secondary datacenter (secondary) replicate
// the primary's tokens and policies with the replication token instead.
func (s *Security) hcl(certFile, keyFile string, server, secondary bool) string {
	replication, tokens := "", ""
	switch {
	case server && secondary:
		replication = "enable_token_replication = true\n  "
		tokens = fmt.Sprintf("replication = %q\n    ", s.ReplicationToken)
	case server:
		tokens = fmt.Sprintf("initial_management = %q\n    ", s.ManagementToken)
	}
	return fmt.Sprintf(`tls {
  defaults {
    ca_file = %q
    cert_file = %q
    key_file = %q
    verify_incoming = true
    verify_outgoing = true
  }
  internal_rpc { verify_server_hostname = true }
}
enable_agent_tls_for_checks = true
acl {
  enabled = true
  default_policy = "deny"
  enable_token_persistence = true
  %stokens {
    %sagent = %q
  }
}
`, s.CA.CertFile, certFile, keyFile, replication, tokens, s.AgentToken)
}

// Tokens are least-privilege ACL tokens' secrets.
type Tokens struct {
	// Trimsvc may register, keep and deregister instances of the service
	// (service:write on its name; a service's checks need nothing more),
	// and publish their load reports (key:write on the service's prefix
	// under trimkit/load/, session:write).
	Trimsvc string
	// Client may find the service's instances (service:read on its name,
	// node:read: the health endpoint filters out nodes a token cannot read)
	// and read their load reports (key:read on the prefix).
	Client string
}

// SetupACL creates, through c (holding the management token), the agents'
// token with node:write if it does not exist yet, and least-privilege
// tokens for trimsvc and its callers for service. It retries while the ACL
// system is still bootstrapping, at most until ctx ends.
func (s *Security) SetupACL(ctx context.Context, c *api.Client, service string) (Tokens, error) {
	var t Tokens
	var err error
	for {
		t, err = s.setupACL(c, service)
		if err == nil {
			return t, nil
		}
		if !ctxtime.Sleep(ctx, 100*time.Millisecond) {
			return Tokens{}, fmt.Errorf("set up ACLs: %w (last: %v)", ctx.Err(), err)
		}
	}
}

// policy returns the ACL policy name, created with rules if it does not
// exist yet.
func policy(acl *api.ACL, name, rules string) (*api.ACLPolicy, error) {
	existing, _, err := acl.PolicyReadByName(name, nil)
	if err == nil && existing != nil {
		return existing, nil
	}
	p, _, err := acl.PolicyCreate(&api.ACLPolicy{Name: name, Rules: rules}, nil)
	return p, err
}

// token returns the secret of a token with policy p: secret, created if
// it does not exist yet, or a new one when secret is "".
func token(acl *api.ACL, secret, desc string, p *api.ACLPolicy) (string, error) {
	if secret != "" {
		if existing, _, err := acl.TokenReadSelf(&api.QueryOptions{Token: secret}); err == nil && existing != nil {
			return secret, nil
		}
	}
	tok, _, err := acl.TokenCreate(&api.ACLToken{SecretID: secret, Description: desc, Policies: []*api.ACLTokenPolicyLink{{ID: p.ID}}}, nil)
	if err != nil {
		return "", err
	}
	return tok.SecretID, nil
}

// InstanceToken creates, through c (holding the management token), a token
// for one instance of service, whose ID is id, registered through the
// agent of node: service:write on the service (Consul's rules go no finer
// than a service's name), key:write on its own load report key alone, and
// session:write on its node alone. With it an instance cannot write,
// acquire or squat another instance's load report; it can still register
// or deregister any instance of its service on its agent, and destroy
// sessions on its node (the other instances' reports come back at their
// next interval).
func (s *Security) InstanceToken(c *api.Client, service, id, node string) (string, error) {
	acl := c.ACL()
	p, err := policy(acl, "instance-"+id, fmt.Sprintf(`service %q { policy = "write" }
key "trimkit/load/%s/%s" { policy = "write" }
session %q { policy = "write" }`, service, service, id, node))
	if err != nil {
		return "", err
	}
	return token(acl, "", "instance "+id+" of "+service, p)
}

// CreateAgentToken creates, through c (holding the management token), the
// agents' token, AgentToken, if it does not exist yet. It retries while the
// ACL system is still bootstrapping, at most until ctx ends.
func (s *Security) CreateAgentToken(ctx context.Context, c *api.Client) error {
	return whileBootstrapping(ctx, "the agents' token", func() error { return s.agentToken(c.ACL()) })
}

// whileBootstrapping calls create until it succeeds, every 100ms while the
// ACL system is still bootstrapping, at most until ctx ends; what says what
// it creates, for the error.
func whileBootstrapping(ctx context.Context, what string, create func() error) error {
	for {
		err := create()
		if err == nil {
			return nil
		}
		if !ctxtime.Sleep(ctx, 100*time.Millisecond) {
			return fmt.Errorf("create %s: %w (last: %v)", what, ctx.Err(), err)
		}
	}
}

// CreateReplicationToken creates, through c (an agent of the primary
// datacenter, holding the management token), the replication token,
// ReplicationToken, if it does not exist yet: with the permissions Consul's
// ACL replication asks for (acl:write to replicate tokens and policies,
// operator:write, service:read and intention:read for configuration
// entries and intentions). It retries while the ACL system is still
// bootstrapping, at most until ctx ends.
func (s *Security) CreateReplicationToken(ctx context.Context, c *api.Client) error {
	return whileBootstrapping(ctx, "the replication token", func() error { return s.replicationToken(c.ACL()) })
}

func (s *Security) replicationToken(acl *api.ACL) error {
	if s.ReplicationToken == "" {
		return errors.New("no replication token chosen: not a federation")
	}
	p, err := policy(acl, "acl-replication", `acl = "write"
operator = "write"
service_prefix "" { policy = "read" intention = "read" }`)
	if err != nil {
		return err
	}
	_, err = token(acl, s.ReplicationToken, "ACL replication of secondary datacenters", p)
	return err
}

func (s *Security) agentToken(acl *api.ACL) error {
	agent, err := policy(acl, "agent", `node_prefix "" { policy = "write" }
service_prefix "" { policy = "read" }`)
	if err != nil {
		return err
	}
	_, err = token(acl, s.AgentToken, "local agents", agent)
	return err
}

// useAgentToken sets the agents' token on a running agent through its API,
// as `consul acl set-agent-token agent` does. The token is the one its
// configuration names; setting it again makes the agent sync its state
// with the servers at once. An agent whose last full sync failed (its
// token did not exist yet) otherwise holds back every change for 15 to 30
// seconds, its retry interval: a service it registers meanwhile passes on
// the agent and stays critical in the catalog.
func (s *Security) useAgentToken(a *Agent) error {
	c, err := a.API()
	if err != nil {
		return err
	}
	if _, err := c.Agent().UpdateAgentACLToken(s.AgentToken, nil); err != nil {
		return fmt.Errorf("set the agent token of %s: %w", a.Name, err)
	}
	return nil
}

func (s *Security) setupACL(c *api.Client, service string) (Tokens, error) {
	acl := c.ACL()
	if err := s.agentToken(acl); err != nil {
		return Tokens{}, err
	}
	svc, err := policy(acl, service+"-service", fmt.Sprintf(`service %q { policy = "write" }
key_prefix "trimkit/load/%s/" { policy = "write" }
session_prefix "" { policy = "write" }`, service, service))
	if err != nil {
		return Tokens{}, err
	}
	caller, err := policy(acl, service+"-caller", fmt.Sprintf(`service %q { policy = "read" }
node_prefix "" { policy = "read" }
key_prefix "trimkit/load/%s/" { policy = "read" }`, service, service))
	if err != nil {
		return Tokens{}, err
	}
	var t Tokens
	if t.Trimsvc, err = token(acl, "", service+" instances", svc); err != nil {
		return Tokens{}, err
	}
	if t.Client, err = token(acl, "", service+" callers", caller); err != nil {
		return Tokens{}, err
	}
	return t, nil
}

// CloneToken creates, through c (holding the management token), a token
// with the policies and description of the token whose secret is secret,
// as rotating a token does: give the new one out, then delete the old
// (by its accessor) once nothing uses it.
func CloneToken(c *api.Client, secret string) (newSecret, oldAccessor string, err error) {
	old, _, err := c.ACL().TokenReadSelf(&api.QueryOptions{Token: secret})
	if err != nil {
		return "", "", fmt.Errorf("read the token to rotate: %w", err)
	}
	tok, _, err := c.ACL().TokenCreate(&api.ACLToken{Description: old.Description, Policies: old.Policies, Roles: old.Roles, ServiceIdentities: old.ServiceIdentities, NodeIdentities: old.NodeIdentities}, nil)
	if err != nil {
		return "", "", fmt.Errorf("create the token's successor: %w", err)
	}
	return tok.SecretID, old.AccessorID, nil
}

// RotateTokenFile rotates the token in file as operators (or Vault Agent)
// do, through c (holding the management token): a token with the same
// policies is created (CloneToken), waited for until every one of servers
// knows it (WaitTokens; none: not waited for), written to file whole (a
// rename, so that no reader sees half of it), and then the old token is
// deleted. It returns the new token's secret.
func RotateTokenFile(ctx context.Context, c *api.Client, servers []*Agent, file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	secret, oldAccessor, err := CloneToken(c, strings.TrimSpace(string(b)))
	if err != nil {
		return "", err
	}
	if err := WaitTokens(ctx, servers, secret); err != nil {
		return "", err
	}
	tmp := file + ".new"
	if err := os.WriteFile(tmp, []byte(secret+"\n"), 0o600); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, file); err != nil {
		return "", err
	}
	if _, err := c.ACL().TokenDelete(oldAccessor, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return "", fmt.Errorf("delete the old token: %w", err)
	}
	return secret, nil
}

// WaitTokens waits, at most until ctx ends, until every one of servers
// knows every token in secrets. A token is created on the leader and
// reaches the other servers a moment later; an agent resolves a token by
// asking any server, and one that has not applied it yet answers "ACL not
// found", a 403 that a service takes as permanent. So a token is handed to
// a service only once every server reads it back (a stale read: each
// server answers from its own state).
func WaitTokens(ctx context.Context, servers []*Agent, secrets ...string) error {
	for _, s := range servers {
		c, err := s.API()
		if err != nil {
			return err
		}
		for _, secret := range secrets {
			for {
				_, _, err := c.ACL().TokenReadSelf((&api.QueryOptions{Token: secret, AllowStale: true}).WithContext(ctx))
				if err == nil {
					break
				}
				if !ctxtime.Sleep(ctx, 50*time.Millisecond) {
					return fmt.Errorf("token not known to %s: %w (last: %v)", s.Name, ctx.Err(), err)
				}
			}
		}
	}
	return nil
}

package sd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/serf/coordinate"

	"github.com/trimkit/trimkit/internal/consulname"
)

// Client is the part of Consul's HTTP API that Instancer and Registrar use
// (a 403 comes back from any of them as an error Register knows not to
// retry), as
// go-kit's sd/consul.Client is for its own: a seam, so that their logic
// (index handling, retries) can be tested against a fake. NewClient adapts
// an *api.Client.
type Client interface {
	// Service lists the instances of service that carry every tag in tags
	// (only passing ones when passingOnly), blocking as q asks.
	Service(ctx context.Context, service string, tags []string, passingOnly bool, q *api.QueryOptions) ([]Entry, *api.QueryMeta, error)
	// Register registers an instance with the local agent.
	Register(ctx context.Context, reg *api.AgentServiceRegistration) error
	// Deregister removes an instance from the local agent.
	Deregister(ctx context.Context, id string) error
	// AgentService returns the local agent's registration of id; an
	// api.StatusError with code 404 when it has none.
	AgentService(ctx context.Context, id string) (*api.AgentService, error)
	// Leader returns the cluster leader's address, "" when there is none
	// (quorum lost). Any server answers it, leader or not.
	Leader(ctx context.Context) (string, error)
}

// NewClient adapts c, a Consul API client of the program's own, to Client.
// ConsulConfig.NewClient is the usual way to a Client: it reads the Consul
// CLI's environment, names the agent's address in errors, reads its token
// and TLS files again as they change, and decodes health answers for a
// tenth of the CPU. A nil c makes a Client that every constructor taking
// one refuses.
func NewClient(c *api.Client) Client { return apiClient{c: c} }

// noClient reports whether c is nil, or an adapter of a nil *api.Client.
func noClient(c any) bool {
	if c == nil {
		return true
	}
	a, ok := c.(apiClient)
	return ok && a.c == nil
}

type apiClient struct {
	c      *api.Client
	addr   string
	dc     string        // the datacenter its queries read; "": the agent's
	health *healthReader // nil: through c
	// transport is the pooled transport ConsulConfig.NewClient's client
	// owns; nil for NewClient's, whose program owns its own.
	transport *http.Transport
}

// CloseIdleConnections closes the idle connections of the transport
// ConsulConfig.NewClient made for the client, as net/http's Client does:
// for a program done with it. Nothing else closes them.
func (a apiClient) CloseIdleConnections() {
	if a.transport != nil {
		a.transport.CloseIdleConnections()
	}
}

// Address is the agent's address, "" when unknown.
func (a apiClient) Address() string { return a.addr }

// Datacenter is the datacenter its queries read, "" for the agent's own.
func (a apiClient) Datacenter() string { return a.dc }

// DatacentersByDistance lists the datacenters the agent's servers know,
// nearest first: Consul sorts them by the median round trip time its
// network coordinates estimate from its servers to each datacenter's (the
// WAN coordinates /v1/coordinate/datacenters lists). The client package's
// "_nearest" reads it.
func (a apiClient) DatacentersByDistance(ctx context.Context) ([]string, error) {
	var out []string
	if _, err := a.c.Raw().Query("/v1/catalog/datacenters", &out, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		return nil, fmt.Errorf("list datacenters at %s: %w", a.addr, asPermission(err))
	}
	return out, nil
}

// NodeDistances estimates, by Consul's network coordinates, the round
// trip time from node near ("_agent": the agent's own) to each node of
// the agent's datacenter that has a coordinate, and names that
// datacenter. Consul gives no distances, only orders: the node near is
// the first of the catalog's nodes sorted by distance from it
// (?near=), and each distance is its coordinate's to that node's. An
// error when near has no coordinate yet (an agent's reaches the servers
// within a minute or so of its start) or Consul does not know it. The
// client package's Config.Near reads it.
func (a apiClient) NodeDistances(ctx context.Context, near string) (string, map[string]time.Duration, error) {
	if err := consulname.ValidNodeName(near); err != nil {
		return "", nil, err
	}
	q := (&api.QueryOptions{Near: near}).WithContext(ctx)
	nodes, _, err := a.c.Catalog().Nodes(q)
	if err != nil {
		return "", nil, fmt.Errorf("list nodes near %s at %s: %w", near, a.addr, asPermission(err))
	}
	coords, _, err := a.c.Coordinate().Nodes((&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return "", nil, fmt.Errorf("read node coordinates at %s: %w", a.addr, asPermission(err))
	}
	byNode := make(map[string]*coordinate.Coordinate, len(coords))
	for _, c := range coords {
		if c.Segment == "" && c.Coord != nil && c.Coord.IsValid() {
			byNode[c.Node] = c.Coord
		}
	}
	if near != consulname.NearAgent && (len(nodes) == 0 || nodes[0].Node != near) {
		// Consul puts near first when it can sort by distance from it.
		if !slices.ContainsFunc(nodes, func(n *api.Node) bool { return n.Node == near }) {
			return "", nil, fmt.Errorf("node %q: consul at %s does not know it", near, a.addr)
		}
		return "", nil, fmt.Errorf("node %s: no network coordinate yet", near)
	}
	if len(nodes) == 0 {
		return "", nil, fmt.Errorf("nodes near %s: consul at %s lists none", near, a.addr)
	}
	from, ok := byNode[nodes[0].Node]
	if !ok {
		if near == consulname.NearAgent {
			return "", nil, fmt.Errorf("the agent's node %s: no network coordinate yet", nodes[0].Node)
		}
		return "", nil, fmt.Errorf("node %s: no network coordinate yet", near)
	}
	dist := make(map[string]time.Duration, len(nodes))
	last := time.Duration(0)
	for _, n := range nodes {
		c, ok := byNode[n.Node]
		if !ok || !c.IsCompatibleWith(from) {
			continue
		}
		d := c.DistanceTo(from)
		if d < last-time.Microsecond { // Consul's sum, in another order
			// Not sorted by distance from the first: Consul could not
			// sort, so the first is not near.
			return "", nil, fmt.Errorf("nodes near %s: consul at %s did not sort them by distance (no coordinate for %s yet)", near, a.addr, near)
		}
		dist[n.Node], last = d, d
	}
	return nodes[0].Datacenter, dist, nil
}

// ExecuteQuery runs the prepared query name (an ID or a name) and returns
// its instances, host:port, sorted, each once; the datacenter that
// answered, and how many datacenters the query failed over to (Consul's
// Failovers). The client package's query discovery polls it.
func (a apiClient) ExecuteQuery(ctx context.Context, name string) ([]string, string, int, error) {
	if err := pathSafe("prepared query", name); err != nil {
		return nil, "", 0, err
	}
	resp, _, err := a.c.PreparedQuery().Execute(name, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, "", 0, fmt.Errorf("execute prepared query %q at %s: %w", name, a.addr, asPermission(err))
	}
	out := make([]string, 0, len(resp.Nodes))
	for _, e := range resp.Nodes {
		out = append(out, entryOf(&e).hostPort())
	}
	return slices.Compact(slices.Sorted(slices.Values(out))), resp.Datacenter, resp.Failovers, nil
}

func (a apiClient) Service(ctx context.Context, service string, tags []string, passingOnly bool, q *api.QueryOptions) ([]Entry, *api.QueryMeta, error) {
	if err := pathSafe("service name", service); err != nil {
		return nil, nil, err
	}
	if q == nil {
		q = &api.QueryOptions{}
	}
	var (
		entries []Entry
		meta    *api.QueryMeta
		err     error
	)
	if a.health != nil {
		entries, meta, err = a.health.service(ctx, a.c.Headers(), service, tags, passingOnly, q)
	} else {
		entries, meta, err = a.viaAPI(ctx, service, tags, passingOnly, q)
	}
	if err == nil && len(entries) == 0 && !meta.ResultsFilteredByACLs && a.anonymousUnderACLs(ctx) {
		// Consul says it filtered an answer only to a real token; the
		// anonymous one gets an empty answer and no word of it.
		return nil, nil, &filteredError{Service: service, Anonymous: true}
	}
	return entries, meta, asPermission(err)
}

// viaAPI is Service through consul/api's decoding.
func (a apiClient) viaAPI(ctx context.Context, service string, tags []string, passingOnly bool, q *api.QueryOptions) ([]Entry, *api.QueryMeta, error) {
	all, meta, err := a.c.Health().ServiceMultipleTags(service, tags, passingOnly, q.WithContext(ctx))
	if err != nil {
		return nil, nil, err
	}
	entries := make([]Entry, 0, len(all))
	for _, e := range all {
		entries = append(entries, entryOf(e))
	}
	return entries, meta, nil
}

// entryOf is the Entry of e.
func entryOf(e *api.ServiceEntry) Entry {
	var out Entry
	if e.Node != nil {
		out.Node, out.Address = e.Node.Node, e.Node.Address
	}
	if s := e.Service; s != nil {
		out.ID, out.Service, out.Port, out.Tags, out.Meta = s.ID, s.Service, s.Port, s.Tags, s.Meta
		out.Address = cmp.Or(s.Address, out.Address)
		if l := s.Locality; l != nil {
			out.Region, out.Zone = l.Region, l.Zone
		}
	}
	out.Status = e.Checks.AggregatedStatus()
	return out
}

// anonymousUnderACLs reports whether the client calls with the anonymous
// token (none given) while the agent enforces ACLs: the agent does not know
// the token as its own then (403), where without ACLs it says so (401).
func (a apiClient) anonymousUnderACLs(ctx context.Context) bool {
	_, _, err := a.c.ACL().TokenReadSelf((&api.QueryOptions{}).WithContext(ctx))
	var se api.StatusError
	return errors.As(err, &se) && se.Code == http.StatusForbidden
}

func (a apiClient) Register(ctx context.Context, reg *api.AgentServiceRegistration) error {
	if err := pathSafe("service ID", reg.ID); err != nil {
		return err // it would be deregistered through a path
	}
	return asPermission(a.c.Agent().ServiceRegisterOpts(reg, api.ServiceRegisterOpts{}.WithContext(ctx)))
}

func (a apiClient) Deregister(ctx context.Context, id string) error {
	if err := pathSafe("service ID", id); err != nil {
		return err
	}
	return asPermission(a.c.Agent().ServiceDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx)))
}

func (a apiClient) AgentService(ctx context.Context, id string) (*api.AgentService, error) {
	if err := pathSafe("service ID", id); err != nil {
		return nil, err
	}
	svc, _, err := a.c.Agent().Service(id, (&api.QueryOptions{}).WithContext(ctx))
	return svc, asPermission(err)
}

func (a apiClient) Leader(ctx context.Context) (string, error) {
	return a.c.Status().LeaderWithQueryOptions((&api.QueryOptions{}).WithContext(ctx))
}

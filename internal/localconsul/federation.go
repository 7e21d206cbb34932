package localconsul

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/trimkit/trimkit/internal/ctxtime"
)

// Federation is Consul across datacenters as it runs in production, on
// loopback: a Cluster per datacenter, dc1, dc2 and so on, whose servers
// join the first datacenter's over the WAN (retry_join_wan), gossip
// encrypted with one key on the LAN and the WAN. Every agent names the
// first datacenter its primary (primary_datacenter). With Secure, the
// primary's servers hold the ACL system and every other datacenter's
// servers replicate its tokens and policies (enable_token_replication)
// with a replication token made in the primary before they start; tokens
// and policies made in the primary are global, so one agent token, one
// caller's token, work in every datacenter. There is one CA, and each
// agent's certificate is its datacenter's (`consul tls cert create -dc`):
// a server's is valid for server.<dc>.consul, which the agents of every
// datacenter verify.
type Federation struct {
	// Datacenters are the clusters, the primary's first.
	Datacenters []*Cluster
}

// NewFederation prepares a cluster per directory in dirs, as o says,
// datacenters dc1, dc2 and so on in that order, dc1 the primary. Start it
// with Start. A federation of one datacenter is the cluster NewCluster
// makes, and configured as it is (no primary datacenter named).
func NewFederation(bin string, dirs []string, o ClusterOptions) (*Federation, error) {
	if len(dirs) == 0 {
		return nil, errors.New("a federation of no datacenter")
	}
	f := &Federation{}
	for i, dir := range dirs {
		var fed federated
		if len(dirs) > 1 {
			fed = federated{datacenter: datacenterName(i), primary: datacenterName(0)}
		}
		if i > 0 {
			fed.with = f.Datacenters[0]
		}
		c, err := newCluster(bin, dir, o, fed)
		if err != nil {
			return nil, errors.Join(err, f.Close())
		}
		if i == 0 && c.Security != nil && len(dirs) > 1 {
			c.Security.ReplicationToken = newUUID()
			if err := c.save(); err != nil {
				return nil, errors.Join(err, c.Close())
			}
		}
		f.Datacenters = append(f.Datacenters, c)
	}
	return f, nil
}

// datacenterName is the name of a federation's datacenter i: dc1 first.
func datacenterName(i int) string { return fmt.Sprintf("dc%d", i+1) }

// Members are every datacenter's members, the primary's first.
func (f *Federation) Members() []*Agent {
	var members []*Agent
	for _, c := range f.Datacenters {
		members = append(members, c.Members()...)
	}
	return members
}

// Start starts the datacenters one after the other, each as Cluster.Start
// does, and waits, at most timeout, until every datacenter's servers know
// every datacenter. Before the secondaries start, a secure federation
// creates the replication token in the primary, and waits until the
// primary's servers all know it; a secondary's servers then join the
// primary's servers where they are (their WAN addresses, were they to
// have moved on start).
func (f *Federation) Start(timeout time.Duration) (err error) {
	deadline := time.Now().Add(timeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	defer func() {
		if err != nil {
			_ = f.Stop()
		}
	}()
	primary := f.Datacenters[0]
	if err := primary.Start(time.Until(deadline)); err != nil {
		if len(f.Datacenters) == 1 {
			return err
		}
		return fmt.Errorf("%s: %w", primary.Datacenter, err)
	}
	if sec := primary.Security; sec != nil && len(f.Datacenters) > 1 {
		api, err := primary.Servers[0].API()
		if err != nil {
			return err
		}
		if err := sec.CreateReplicationToken(ctx, api); err != nil {
			return err
		}
		if err := WaitTokens(ctx, primary.Servers, sec.ReplicationToken); err != nil {
			return err
		}
	}
	var wan []string
	for _, s := range primary.Servers {
		wan = append(wan, s.SerfWANAddr)
	}
	for _, c := range f.Datacenters[1:] {
		for _, s := range c.Servers {
			if err := s.setJoinWAN(wan); err != nil {
				return err
			}
		}
		if err := c.Start(time.Until(deadline)); err != nil {
			return fmt.Errorf("%s: %w", c.Datacenter, err)
		}
	}
	return f.WaitFederated(ctx)
}

// WaitFederated waits until a running server of each datacenter lists
// every datacenter (/v1/catalog/datacenters).
func (f *Federation) WaitFederated(ctx context.Context) error {
	var want []string
	for _, c := range f.Datacenters {
		want = append(want, c.Datacenter)
	}
	slices.Sort(want)
	for {
		err := f.federated(want)
		if err == nil {
			return nil
		}
		if !ctxtime.Sleep(ctx, 100*time.Millisecond) {
			return fmt.Errorf("datacenters not federated: %w (last: %v)", ctx.Err(), err)
		}
	}
}

func (f *Federation) federated(want []string) error {
	for _, c := range f.Datacenters {
		i := slices.IndexFunc(c.Servers, (*Agent).Running)
		if i < 0 {
			return fmt.Errorf("%s: no server runs", c.Datacenter)
		}
		api, err := c.Servers[i].API()
		if err != nil {
			return err
		}
		have, err := api.Catalog().Datacenters()
		if err != nil {
			return fmt.Errorf("%s: %w", c.Servers[i].Name, err)
		}
		slices.Sort(have)
		if !slices.Equal(want, have) {
			return fmt.Errorf("%s knows the datacenters %q, want %q", c.Servers[i].Name, have, want)
		}
	}
	return nil
}

// Stop stops every datacenter's members, the secondaries' first.
func (f *Federation) Stop() error {
	var errs []error
	for _, c := range slices.Backward(f.Datacenters) {
		errs = append(errs, c.Stop())
	}
	return errors.Join(errs...)
}

// Close stops every member and gives their ports back; the federation is
// not to be started again.
func (f *Federation) Close() error {
	var errs []error
	for _, c := range slices.Backward(f.Datacenters) {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

package main

import (
	"errors"
	"testing"

	"github.com/go-kit/log"
)

func TestDiscoveryWatchCountsFailedQueries(t *testing.T) {
	d := &discoveryWatch{next: log.NewNopLogger()}
	_ = d.Log("level", "info", "msg", "instance ejected", "instance", "127.0.0.1:1")
	_ = d.Log("msg", "consul query failed; keeping the last known instances", "err", errors.New("dial tcp: connection refused"))
	_ = d.Log("msg", "first consul query failed", "err", errors.New("permission denied by consul ACLs: ACL not found"))
	n, refusals, _, last := d.state()
	if n != 2 || refusals != 1 || !refused(last) {
		t.Errorf("want 2 failures, 1 refusal, the last refused; have %d, %d, %q", n, refusals, last)
	}
}

// Package watchstate is the JSON of a discovery watch's state, as
// sd.Instancer marshals it and client.Handler's page reads it.
package watchstate

import "time"

// State is a watch's state: see sd.Instancer.MarshalJSON.
type State struct {
	Service        string     `json:"service"`
	Tags           []string   `json:"tags,omitempty"`
	Consul         string     `json:"consul"`
	Datacenter     string     `json:"datacenter,omitempty"`
	Instances      []string   `json:"instances"`
	LastIndex      uint64     `json:"last_index"`
	LastAnswer     *time.Time `json:"last_answer,omitempty"`
	BehindLeaderMS float64    `json:"behind_leader_ms"`
	Stale          bool       `json:"stale"`
	Error          string     `json:"error,omitempty"`
	ErrorSince     *time.Time `json:"error_since,omitempty"`
}

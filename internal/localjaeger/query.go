package localjaeger

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
)

// Trace is a trace as Jaeger's query API returns it.
type Trace struct {
	ID    string
	Spans []Span
}

// Span is one span of a Trace.
type Span struct {
	ID, Parent string // Parent: the span it is a child of, "" for a root
	Operation  string
	Service    string
}

// Traces are the traces Jaeger holds with spans of service, at most
// limit, from its query API (/api/traces).
func (j *Jaeger) Traces(ctx context.Context, service string, limit int) ([]Trace, error) {
	u := fmt.Sprintf("http://%s/api/traces?service=%s&limit=%d", j.Query, url.QueryEscape(service), limit)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	var body struct {
		Data []struct {
			TraceID string `json:"traceID"`
			Spans   []struct {
				SpanID        string `json:"spanID"`
				OperationName string `json:"operationName"`
				ProcessID     string `json:"processID"`
				References    []struct {
					RefType string `json:"refType"`
					SpanID  string `json:"spanID"`
				} `json:"references"`
			} `json:"spans"`
			Processes map[string]struct {
				ServiceName string `json:"serviceName"`
			} `json:"processes"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	var traces []Trace
	for _, d := range body.Data {
		t := Trace{ID: d.TraceID}
		for _, s := range d.Spans {
			sp := Span{ID: s.SpanID, Operation: s.OperationName, Service: d.Processes[s.ProcessID].ServiceName}
			for _, r := range s.References {
				if r.RefType == "CHILD_OF" {
					sp.Parent = r.SpanID
				}
			}
			t.Spans = append(t.Spans, sp)
		}
		traces = append(traces, t)
	}
	return traces, nil
}

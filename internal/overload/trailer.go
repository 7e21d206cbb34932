package overload

import (
	"math"
	"strings"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protowire"
)

// Key is the trailer that carries the report: ORCA's per-call key.
const Key = "endpoint-load-metrics-bin"

// limitMetric is the named metric that carries the concurrency limit.
const limitMetric = "concurrency_limit"

// Field numbers of xds.data.orca.v3.OrcaLoadReport.
const (
	fieldNamedMetrics           = 8
	fieldApplicationUtilization = 9
)

// Report is an instance's load as one answer reports it.
type Report struct {
	// Utilization is the calls in flight over the concurrency limit: 1 is
	// full. ORCA's application_utilization.
	Utilization float64
	// Limit is the concurrency limit (calls), 0 when not reported.
	Limit float64
}

// Append appends r, encoded as an OrcaLoadReport, to b.
func Append(b []byte, r Report) []byte {
	b = protowire.AppendTag(b, fieldApplicationUtilization, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, math.Float64bits(r.Utilization))
	if r.Limit > 0 {
		var entry [32]byte
		e := protowire.AppendTag(entry[:0], 1, protowire.BytesType)
		e = protowire.AppendString(e, limitMetric)
		e = protowire.AppendTag(e, 2, protowire.Fixed64Type)
		e = protowire.AppendFixed64(e, math.Float64bits(r.Limit))
		b = protowire.AppendTag(b, fieldNamedMetrics, protowire.BytesType)
		b = protowire.AppendBytes(b, e)
	}
	return b
}

// Parse reads a report from the value of Key. ok is false when b is not a
// well-formed OrcaLoadReport or reports no utilization (or a negative or
// non-finite one). Fields it does not know are skipped.
func Parse(b []byte) (r Report, ok bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return Report{}, false
		}
		b = b[n:]
		switch {
		case num == fieldApplicationUtilization && typ == protowire.Fixed64Type:
			v, n := protowire.ConsumeFixed64(b)
			if n < 0 {
				return Report{}, false
			}
			r.Utilization, ok = math.Float64frombits(v), true
			b = b[n:]
		case num == fieldNamedMetrics && typ == protowire.BytesType:
			entry, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return Report{}, false
			}
			if v, found := limitOf(entry); found {
				r.Limit = v
			}
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return Report{}, false
			}
			b = b[n:]
		}
	}
	if !ok || r.Utilization < 0 || math.IsNaN(r.Utilization) || math.IsInf(r.Utilization, 0) ||
		r.Limit < 0 || math.IsNaN(r.Limit) || math.IsInf(r.Limit, 0) {
		return Report{}, false
	}
	return r, true
}

// limitOf reads a named_metrics map entry and returns its value when its
// key is limitMetric.
func limitOf(entry []byte) (float64, bool) {
	var (
		key   string
		value float64
	)
	for len(entry) > 0 {
		num, typ, n := protowire.ConsumeTag(entry)
		if n < 0 {
			return 0, false
		}
		entry = entry[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			s, n := protowire.ConsumeString(entry)
			if n < 0 {
				return 0, false
			}
			key, entry = s, entry[n:]
		case num == 2 && typ == protowire.Fixed64Type:
			v, n := protowire.ConsumeFixed64(entry)
			if n < 0 {
				return 0, false
			}
			value, entry = math.Float64frombits(v), entry[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, entry)
			if n < 0 {
				return 0, false
			}
			entry = entry[n:]
		}
	}
	return value, key == limitMetric
}

// FromTrailer reads the report in md, the trailer of an answer.
func FromTrailer(md metadata.MD) (Report, bool) {
	vs := md.Get(Key)
	if len(vs) == 0 {
		return Report{}, false
	}
	return Parse([]byte(vs[len(vs)-1]))
}

// RequestKey is the request header by which a caller asks for the report,
// with the value RequestBinary: ORCA's convention for HTTP backends
// (endpoint-load-metrics-format), here asking for the binary trailer. An
// instance reports its load only to the callers that ask, so that one
// whose callers read no load (round robin, a tool) pays for no trailer.
const (
	RequestKey    = "endpoint-load-metrics-format"
	RequestBinary = "BIN"
)

// Requested reports whether md, a call's request headers, asks for the
// report.
func Requested(md metadata.MD) bool {
	for _, v := range md[RequestKey] {
		if strings.EqualFold(v, RequestBinary) {
			return true
		}
	}
	return false
}

// Request is the header that asks for the report, for a client's picks
// to add to their calls. It must not be modified.
var Request = metadata.Pairs(RequestKey, RequestBinary)

package overload

import (
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// The ErrorInfo of a shed call.
const (
	Reason = "OVERLOADED"
	Domain = "github.com/trimkit/trimkit"
)

// Marker is the detail a shed call's status carries, made once and shared
// by every shed: shedding costs no marshalling.
type Marker struct{ detail *anypb.Any }

// NewMarker returns a Marker.
func NewMarker() Marker {
	// Marshalling a message of two strings cannot fail.
	b, _ := proto.Marshal(&errdetails.ErrorInfo{Reason: Reason, Domain: Domain})
	return Marker{detail: &anypb.Any{TypeUrl: "type.googleapis.com/google.rpc.ErrorInfo", Value: b}}
}

// Shed returns the error of a shed call: ResourceExhausted with msg and
// the mark.
func (m Marker) Shed(msg string) error {
	return status.FromProto(&spb.Status{Code: int32(codes.ResourceExhausted), Message: msg, Details: []*anypb.Any{m.detail}}).Err()
}

// IsShed reports whether err is (or wraps) the failure of a call an
// instance shed.
func IsShed(err error) bool {
	var se interface{ GRPCStatus() *status.Status }
	if err == nil || !errors.As(err, &se) {
		return false
	}
	p := se.GRPCStatus().Proto()
	if p.GetCode() != int32(codes.ResourceExhausted) {
		return false
	}
	for _, d := range p.GetDetails() {
		var info errdetails.ErrorInfo
		if d.MessageIs(&info) && d.UnmarshalTo(&info) == nil && info.GetReason() == Reason && info.GetDomain() == Domain {
			return true
		}
	}
	return false
}

package trimsvc

import (
	"context"

	"github.com/go-kit/kit/endpoint"
)

// Set collects the endpoints of the trim service. It implements Service, so
// a client built from endpoints looks like the service itself.
type Set struct {
	TrimSpaceEndpoint endpoint.Endpoint
}

// NewServerSet wraps svc in endpoints, for a server.
func NewServerSet(svc Service) Set {
	return Set{TrimSpaceEndpoint: MakeTrimSpaceEndpoint(svc)}
}

// TrimSpace implements Service by calling the endpoint.
func (s Set) TrimSpace(ctx context.Context, in string) (string, error) {
	resp, err := s.TrimSpaceEndpoint(ctx, TrimRequest{S: in})
	if err != nil {
		return "", err
	}
	r := resp.(TrimResponse)
	return r.S, r.Err
}

// MakeTrimSpaceEndpoint returns an endpoint that calls svc.TrimSpace. Errors
// of the service travel in TrimResponse.Err; the endpoint's own error is nil.
func MakeTrimSpaceEndpoint(svc Service) endpoint.Endpoint {
	return func(ctx context.Context, request interface{}) (interface{}, error) {
		req := request.(TrimRequest)
		out, err := svc.TrimSpace(ctx, req.S)
		return TrimResponse{S: out, Err: err}, nil
	}
}

// TrimRequest is the request of the TrimSpace endpoint.
type TrimRequest struct {
	S string
}

// TrimResponse is the response of the TrimSpace endpoint.
type TrimResponse struct {
	S   string
	Err error // a business error of the service, also set by client transports
}

// Failed implements endpoint.Failer.
func (r TrimResponse) Failed() error { return r.Err }

var _ endpoint.Failer = TrimResponse{}

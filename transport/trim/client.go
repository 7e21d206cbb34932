package trim

import (
	"cmp"
	"context"
	"fmt"
	"unicode/utf8"

	"github.com/go-kit/kit/endpoint"
	kitsd "github.com/go-kit/kit/sd"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/pb"
	"github.com/trimkit/trimkit/trimsvc"
)

// TrimResponse is what a client's TrimSpace endpoint answers with: the
// service's response and Instance, the service ID of the instance that
// answered, read from the trimsvc-instance header. It is the transport's
// own, because the header is: the service knows nothing of it.
type TrimResponse struct {
	trimsvc.TrimResponse
	Instance string
}

// Service is the client side of the trim service: a TrimSpace endpoint that
// answers with TrimResponse (one gRPC connection's, or a whole client
// stack's), and the trimsvc.Service it makes.
type Service struct {
	TrimSpaceEndpoint endpoint.Endpoint
}

var _ trimsvc.Service = Service{}

// TrimSpace implements trimsvc.Service by calling the endpoint.
func (c Service) TrimSpace(ctx context.Context, in string) (string, error) {
	resp, err := c.TrimSpaceEndpoint(ctx, trimsvc.TrimRequest{S: in})
	if err != nil {
		return "", err
	}
	r := resp.(TrimResponse)
	return r.S, r.Err
}

// NewGRPCClient returns the client over conn. A business error (such as
// input over the server's limit) comes back in TrimResponse.Err, not as the
// endpoint's error; the endpoint's error is for failures of the call itself
// (Unavailable, DeadlineExceeded, ...). Both are *StatusError values when a
// server answered them.
//
// Unlike the server, the client does not use go-kit's transport/grpc Client,
// which costs allocations on the path every call of the stack takes
// (metadata copies, context values, reflection; BENCHMARKS.md has the
// measured figure); this endpoint does the same job with a direct Invoke.
func NewGRPCClient(conn grpc.ClientConnInterface) Service {
	return Service{TrimSpaceEndpoint: func(ctx context.Context, request interface{}) (interface{}, error) {
		req, ok := request.(trimsvc.TrimRequest)
		if !ok {
			return nil, fmt.Errorf("trim client: unexpected request type %T", request)
		}
		if !utf8.ValidString(req.S) {
			// Protobuf refuses to marshal it; answer as a server would.
			return TrimResponse{TrimResponse: trimsvc.TrimResponse{Err: FromStatus(Status(trimsvc.ErrInvalidUTF8).Err())}}, nil
		}
		var (
			header metadata.MD
			reply  pb.TrimResponse
		)
		err := conn.Invoke(ctx, pb.Trim_TrimSpace_FullMethodName, &pb.TrimRequest{S: req.S}, &reply, grpc.Header(&header))
		if err == nil {
			return TrimResponse{TrimResponse: trimsvc.TrimResponse{S: reply.GetS()}, Instance: headerValue(header, InstanceHeader)}, nil
		}
		err = FromStatus(err)
		if isBusiness(err) {
			return TrimResponse{TrimResponse: trimsvc.TrimResponse{Err: err}, Instance: headerValue(header, InstanceHeader)}, nil
		}
		return nil, err
	}}
}

// isBusiness reports whether err is a service error the server answered
// with, as opposed to a failure of the call.
func isBusiness(err error) bool {
	se, ok := err.(*StatusError)
	return ok && se.err != nil
}

// headerValue is the first value of key (lower case) in md, or "".
func headerValue(md metadata.MD, key string) string {
	if v := md[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// DefaultServiceName is the Consul service NewClient calls unless
// told otherwise.
const DefaultServiceName = "trimsvc"

// Endpoints is the trim service's client.EndpointFunc: the TrimSpace
// endpoint over one connection (NewGRPCClient's).
func Endpoints(conn *grpc.ClientConn) endpoint.Endpoint {
	return NewGRPCClient(conn).TrimSpaceEndpoint
}

// Client is the trim service found in Consul, balanced and retried:
// the generic client stack (client.New) over Endpoints. It implements
// trimsvc.Service; its Endpoint takes a trimsvc.TrimRequest and answers
// with a TrimResponse, whose Instance names the instance that answered.
// Close it when done.
type Client struct {
	*client.Client
}

var _ trimsvc.Service = (*Client)(nil)

// NewClient builds the client stack for the trim service: cfg.Service
// defaults to "trimsvc".
func NewClient(cfg client.Config, opts ...client.Option) (*Client, error) {
	cfg.Service = cmp.Or(cfg.Service, DefaultServiceName)
	c, err := client.New(cfg, Endpoints, opts...)
	if err != nil {
		return nil, err
	}
	return &Client{c}, nil
}

// NewClientFromInstancer builds the client stack for the trim service
// over any go-kit Instancer (sd.FixedInstancer, say); see
// client.NewFromInstancer.
func NewClientFromInstancer(instancer kitsd.Instancer, cfg client.CallConfig, opts ...client.Option) (*Client, error) {
	c, err := client.NewFromInstancer(instancer, cfg, Endpoints, opts...)
	if err != nil {
		return nil, err
	}
	return &Client{c}, nil
}

// TrimSpace implements trimsvc.Service.
func (c *Client) TrimSpace(ctx context.Context, s string) (string, error) {
	return Service{TrimSpaceEndpoint: c.Endpoint()}.TrimSpace(ctx, s)
}

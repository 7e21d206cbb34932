package transport

import (
	"context"
	"fmt"
	"unicode/utf8"

	kitgrpc "github.com/go-kit/kit/transport/grpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/trimkit/trimkit/pb"
	"github.com/trimkit/trimkit/trimsvc"
)

// NewGRPCClient returns the trim endpoints over conn. The TrimSpace endpoint
// answers with a trimsvc.TrimResponse whose Instance is read from the
// trimsvc-instance header. A business error (such as input over the
// server's limit) comes back in TrimResponse.Err, not as the endpoint's error;
// the endpoint's error is for failures of the call itself (Unavailable,
// DeadlineExceeded, ...). Both are *StatusError values when a server
// answered them.
func NewGRPCClient(conn *grpc.ClientConn) trimsvc.Set {
	call := kitgrpc.NewClient(
		conn,
		pb.Trim_ServiceDesc.ServiceName,
		"TrimSpace",
		encodeGRPCTrimRequest,
		decodeGRPCTrimResponse,
		pb.TrimResponse{},
		kitgrpc.ClientAfter(func(ctx context.Context, header, trailer metadata.MD) context.Context {
			return context.WithValue(ctx, instanceKey{}, first(header, trailer, InstanceHeader))
		}),
	).Endpoint()
	return trimsvc.Set{TrimSpaceEndpoint: func(ctx context.Context, request interface{}) (interface{}, error) {
		req, ok := request.(trimsvc.TrimRequest)
		if !ok {
			return nil, fmt.Errorf("trim client: unexpected request type %T", request)
		}
		if !utf8.ValidString(req.S) {
			// Protobuf refuses to marshal it; answer as a server would.
			return trimsvc.TrimResponse{Err: FromStatus(Status(trimsvc.ErrInvalidUTF8).Err())}, nil
		}
		resp, err := call(ctx, req)
		if err == nil {
			return resp, nil
		}
		err = FromStatus(err)
		if isBusiness(err) {
			return trimsvc.TrimResponse{Err: err}, nil
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

type instanceKey struct{}

func first(header, trailer metadata.MD, key string) string {
	if v := header.Get(key); len(v) > 0 {
		return v[0]
	}
	if v := trailer.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func encodeGRPCTrimRequest(_ context.Context, request interface{}) (interface{}, error) {
	req := request.(trimsvc.TrimRequest)
	return &pb.TrimRequest{S: req.S}, nil
}

func decodeGRPCTrimResponse(ctx context.Context, grpcReply interface{}) (interface{}, error) {
	reply, ok := grpcReply.(*pb.TrimResponse)
	if !ok {
		return nil, fmt.Errorf("decode trim response: unexpected type %T", grpcReply)
	}
	instance, _ := ctx.Value(instanceKey{}).(string)
	return trimsvc.TrimResponse{S: reply.GetS(), Instance: instance}, nil
}

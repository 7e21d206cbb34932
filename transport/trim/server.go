package trim

import (
	"context"
	"fmt"

	kitgrpc "github.com/go-kit/kit/transport/grpc"
	"github.com/go-kit/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/trimkit/trimkit/pb"
	"github.com/trimkit/trimkit/trimsvc"
)

// InstanceHeader is the gRPC response header that names the service ID of
// the instance that answered.
const InstanceHeader = "trimsvc-instance"

// NewGRPCServer makes the endpoints available as a pb.TrimServer. Every
// response the service handles, failures included, carries the
// trimsvc-instance header set to instanceID.
func NewGRPCServer(endpoints trimsvc.Set, instanceID string, logger log.Logger) pb.TrimServer {
	header := metadata.Pairs(InstanceHeader, instanceID)
	return &grpcServer{
		trimSpace: kitgrpc.NewServer(
			endpoints.TrimSpaceEndpoint,
			decodeGRPCTrimRequest,
			encodeGRPCTrimResponse,
			kitgrpc.ServerBefore(func(ctx context.Context, _ metadata.MD) context.Context {
				// Set, not sent: grpc-go sends it with the response or the
				// error status, whichever comes.
				if err := grpc.SetHeader(ctx, header); err != nil {
					_ = logger.Log("during", "SetHeader", "err", err)
				}
				return ctx
			}),
		),
	}
}

type grpcServer struct {
	pb.UnimplementedTrimServer
	trimSpace kitgrpc.Handler
}

func (s *grpcServer) TrimSpace(ctx context.Context, req *pb.TrimRequest) (*pb.TrimResponse, error) {
	_, resp, err := s.trimSpace.ServeGRPC(ctx, req)
	if err != nil {
		return nil, Status(err).Err()
	}
	return resp.(*pb.TrimResponse), nil
}

func decodeGRPCTrimRequest(_ context.Context, grpcReq interface{}) (interface{}, error) {
	req, ok := grpcReq.(*pb.TrimRequest)
	if !ok {
		return nil, fmt.Errorf("decode trim request: unexpected type %T", grpcReq)
	}
	return trimsvc.TrimRequest{S: req.GetS()}, nil
}

// encodeGRPCTrimResponse turns a business error of the service into the
// error the gRPC handler answers with.
func encodeGRPCTrimResponse(_ context.Context, response interface{}) (interface{}, error) {
	resp, ok := response.(trimsvc.TrimResponse)
	if !ok {
		return nil, fmt.Errorf("encode trim response: unexpected type %T", response)
	}
	if resp.Err != nil {
		return nil, resp.Err
	}
	return &pb.TrimResponse{S: resp.S}, nil
}

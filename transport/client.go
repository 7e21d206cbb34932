package transport

import (
	"context"
	"fmt"
	"unicode/utf8"

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
//
// Unlike the server, the client does not use go-kit's transport/grpc: its
// Client costs about 25 allocations a call (metadata copies, context values,
// reflection) on the path every request of the stack takes; this endpoint
// does the same job with a direct Invoke. See BENCHMARKS.md.
func NewGRPCClient(conn grpc.ClientConnInterface) trimsvc.Set {
	return trimsvc.Set{TrimSpaceEndpoint: func(ctx context.Context, request interface{}) (interface{}, error) {
		req, ok := request.(trimsvc.TrimRequest)
		if !ok {
			return nil, fmt.Errorf("trim client: unexpected request type %T", request)
		}
		if !utf8.ValidString(req.S) {
			// Protobuf refuses to marshal it; answer as a server would.
			return trimsvc.TrimResponse{Err: FromStatus(Status(trimsvc.ErrInvalidUTF8).Err())}, nil
		}
		var (
			header metadata.MD
			reply  pb.TrimResponse
		)
		err := conn.Invoke(ctx, pb.Trim_TrimSpace_FullMethodName, &pb.TrimRequest{S: req.S}, &reply, grpc.Header(&header))
		if err == nil {
			return trimsvc.TrimResponse{S: reply.GetS(), Instance: headerValue(header, InstanceHeader)}, nil
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

// headerValue is the first value of key (lower case) in md, or "".
func headerValue(md metadata.MD, key string) string {
	if v := md[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

package client

import (
	"fmt"
	"io"

	"github.com/go-kit/kit/endpoint"
	kitsd "github.com/go-kit/kit/sd"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/trimkit/trimkit/transport"
)

// Factory returns a go-kit sd.Factory that opens one gRPC connection
// (grpc.NewClient, plaintext unless opts say otherwise) per instance
// "host:port" and returns the TrimSpace endpoint over it; the io.Closer
// closes the connection.
func Factory(opts ...grpc.DialOption) kitsd.Factory {
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	return func(instance string) (endpoint.Endpoint, io.Closer, error) {
		conn, err := grpc.NewClient(instance, opts...)
		if err != nil {
			return nil, nil, fmt.Errorf("grpc client for %s: %w", instance, err)
		}
		return transport.NewGRPCClient(conn).TrimSpaceEndpoint, conn, nil
	}
}

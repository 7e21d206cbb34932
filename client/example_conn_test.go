package client_test

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/pb"
	"github.com/trimkit/trimkit/sd"
)

// One *grpc.ClientConn for the service, for its generated client: unary
// calls through Retry, streams that open on the instance with the fewest,
// ejection, fail-static, all as New's. grpc.Peer says which instance
// answered.
func ExampleNewConn() {
	conn, err := client.NewConn(client.Config{
		Consul:     sd.ConsulConfig{Address: "127.0.0.1:8500"},
		Service:    "trimsvc",
		CallConfig: client.CallConfig{Balancer: client.P2CName},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close() // stops discovery, closes every connection

	trim := pb.NewTrimClient(conn)
	var answered peer.Peer
	resp, err := trim.TrimSpace(context.Background(), &pb.TrimRequest{S: " he llo "}, grpc.Peer(&answered))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.GetS(), "from", answered.Addr)
}

// grpc.NewClient with a consul target: the resolver, balancer and
// interceptors come from DialOptions, the credentials from the program.
// The query says what Config would (see ConsulTarget).
func ExampleDialOptions() {
	opts := append(client.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	conn, err := grpc.NewClient("consul://127.0.0.1:8500/trimsvc?balancer=p2c&timeout=1s", opts...)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	resp, err := pb.NewTrimClient(conn).TrimSpace(context.Background(), &pb.TrimRequest{S: " he llo "})
	fmt.Println(resp.GetS(), err)
}

// Command bareserver is the floor of the server-side throughput bench: the
// trim service's proto on a bare grpc-go server (grpc.NewServer, no
// go-kit, no limits, no health, no header), trimming with
// strings.TrimSpace. It says on stderr where it listens, then serves
// until SIGTERM or SIGINT.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"google.golang.org/grpc"

	"github.com/trimkit/trimkit/pb"
)

type trim struct{ pb.UnimplementedTrimServer }

func (trim) TrimSpace(_ context.Context, req *pb.TrimRequest) (*pb.TrimResponse, error) {
	return &pb.TrimResponse{S: strings.TrimSpace(req.GetS())}, nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.Parse()
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bareserver:", err)
		os.Exit(1)
	}
	server := grpc.NewServer()
	pb.RegisterTrimServer(server, trim{})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		server.GracefulStop()
	}()
	fmt.Fprintln(os.Stderr, "listening on", lis.Addr())
	if err := server.Serve(lis); err != nil {
		fmt.Fprintln(os.Stderr, "bareserver:", err)
		os.Exit(1)
	}
}

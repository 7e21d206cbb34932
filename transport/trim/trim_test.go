package trim_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/go-kit/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/pb"
	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
)

// startServer serves the trim service on 127.0.0.1:0 and returns a client
// connection to it.
func startServer(t *testing.T, id string, maxInput int, opts ...grpc.ServerOption) *grpc.ClientConn {
	t.Helper()
	svc, err := trimsvc.New(maxInput)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(opts...)
	pb.RegisterTrimServer(s, trim.NewGRPCServer(trimsvc.NewServerSet(svc), id, log.NewNopLogger()))
	done := make(chan error, 1)
	go func() { done <- s.Serve(lis) }()
	t.Cleanup(func() {
		s.Stop()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestRoundTrip(t *testing.T) {
	conn := startServer(t, "trimsvc-test-1", 16)
	set := trim.NewGRPCClient(conn)
	ctx := context.Background()

	resp, err := set.TrimSpaceEndpoint(ctx, trimsvc.TrimRequest{S: " a\tb\u3000c "})
	if err != nil {
		t.Fatal(err)
	}
	r := resp.(trim.TrimResponse)
	if want, have := "abc", r.S; want != have {
		t.Errorf("want %q, have %q", want, have)
	}
	if want, have := "trimsvc-test-1", r.Instance; want != have {
		t.Errorf("instance: want %q, have %q", want, have)
	}
	if r.Err != nil {
		t.Errorf("unexpected business error %v", r.Err)
	}

	// The Set is a trimsvc.Service too.
	out, err := set.TrimSpace(ctx, "x y")
	if want, have := "xy", out; err != nil || want != have {
		t.Errorf("want %q, have %q (err %v)", want, have, err)
	}
}

func TestInputTooLarge(t *testing.T) {
	conn := startServer(t, "trimsvc-test-1", 16)
	set := trim.NewGRPCClient(conn)

	resp, err := set.TrimSpaceEndpoint(context.Background(), trimsvc.TrimRequest{S: strings.Repeat("x", 17)})
	if err != nil {
		t.Fatalf("a business error travels in the response, have endpoint error %v", err)
	}
	bizErr := resp.(trim.TrimResponse).Err
	if want, have := "trimsvc-test-1", resp.(trim.TrimResponse).Instance; want != have {
		t.Errorf("instance of a business error: want %q, have %q", want, have)
	}
	if !errors.Is(bizErr, trimsvc.ErrInputTooLarge) {
		t.Fatalf("want ErrInputTooLarge, have %v", bizErr)
	}
	var limit *trimsvc.LimitError
	if !errors.As(bizErr, &limit) || limit.Limit != 16 || limit.Size != 17 {
		t.Errorf("want LimitError{17, 16}, have %#v", limit)
	}
	st, ok := status.FromError(bizErr)
	if !ok {
		t.Fatalf("status.FromError: not a status error: %v", bizErr)
	}
	if want, have := codes.InvalidArgument, st.Code(); want != have {
		t.Errorf("want %v, have %v", want, have)
	}
	if want := "limit of 16 bytes"; !strings.Contains(st.Message(), want) {
		t.Errorf("message %q does not name the limit", st.Message())
	}

	// The header comes with errors too.
	var header metadata.MD
	_, err = pb.NewTrimClient(conn).TrimSpace(context.Background(), &pb.TrimRequest{S: strings.Repeat("x", 17)}, grpc.Header(&header))
	if want, have := codes.InvalidArgument, status.Code(err); want != have {
		t.Errorf("want %v, have %v", want, have)
	}
	if want, have := []string{"trimsvc-test-1"}, header.Get(trim.InstanceHeader); len(have) != 1 || have[0] != want[0] {
		t.Errorf("header on error: want %v, have %v", want, have)
	}
}

func TestOverReceiveLimit(t *testing.T) {
	conn := startServer(t, "trimsvc-test-1", 1<<20, grpc.MaxRecvMsgSize(1024))
	_, err := trim.NewGRPCClient(conn).TrimSpace(context.Background(), strings.Repeat("x", 2048))
	if want, have := codes.ResourceExhausted, status.Code(err); want != have {
		t.Errorf("want %v, have %v (%v)", want, have, err)
	}
}

// rawCodec sends bytes as they are, so a test can send what a well-behaved
// protobuf client refuses to: a string field with invalid UTF-8.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func TestInvalidUTF8(t *testing.T) {
	conn := startServer(t, "trimsvc-test-1", 16)

	// On the wire: field 1, length 3, "a\xffb".
	req, reply := []byte{0x0a, 0x03, 'a', 0xff, 'b'}, []byte(nil)
	err := conn.Invoke(context.Background(), "/pb.Trim/TrimSpace", &req, &reply, grpc.ForceCodec(rawCodec{}))
	st := status.Convert(err)
	if want, have := codes.Internal, st.Code(); want != have {
		t.Errorf("want %v, have %v", want, have)
	}
	if want := "invalid UTF-8"; !strings.Contains(st.Message(), want) {
		t.Errorf("message %q does not say %q", st.Message(), want)
	}

	// The server survived, and the client refuses before sending.
	set := trim.NewGRPCClient(conn)
	if _, err := set.TrimSpace(context.Background(), "ok"); err != nil {
		t.Fatalf("after invalid request: %v", err)
	}
	_, err = set.TrimSpace(context.Background(), "a\xffb")
	if !errors.Is(err, trimsvc.ErrInvalidUTF8) {
		t.Errorf("want ErrInvalidUTF8, have %v", err)
	}
	if want, have := codes.InvalidArgument, status.Code(err); want != have {
		t.Errorf("want %v, have %v", want, have)
	}
}

func TestUnavailableIsEndpointError(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there now
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = trim.NewGRPCClient(conn).TrimSpaceEndpoint(context.Background(), trimsvc.TrimRequest{S: "x"})
	if want, have := codes.Unavailable, status.Code(err); want != have {
		t.Errorf("want %v, have %v (%v)", want, have, err)
	}
	var se *trim.StatusError
	if !errors.As(err, &se) {
		t.Errorf("want *StatusError, have %T", err)
	}
}

func TestCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{nil, codes.OK},
		{&trimsvc.LimitError{Size: 2, Limit: 1}, codes.InvalidArgument},
		{trimsvc.ErrInvalidUTF8, codes.InvalidArgument},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{context.Canceled, codes.Canceled},
		{status.Error(codes.Unavailable, "x"), codes.Unavailable},
		{errors.New("boom"), codes.Internal},
	} {
		if want, have := tc.want, trim.Code(tc.err); want != have {
			t.Errorf("Code(%v): want %v, have %v", tc.err, want, have)
		}
	}
}

func TestServiceErrorsRoundTrip(t *testing.T) {
	for _, err := range []error{trimsvc.ErrInputTooLarge, &trimsvc.LimitError{Size: 9, Limit: 8}, trimsvc.ErrInvalidUTF8} {
		back := trim.FromStatus(trim.Status(err).Err())
		if !errors.Is(back, err) && !errors.Is(back, errors.Unwrap(err)) {
			t.Errorf("%v: restored as %v", err, back)
		}
		if want, have := codes.InvalidArgument, status.Code(back); want != have {
			t.Errorf("%v: want %v, have %v", err, want, have)
		}
	}
	var limit *trimsvc.LimitError
	back := trim.FromStatus(trim.Status(&trimsvc.LimitError{Size: 9, Limit: 8}).Err())
	if !errors.As(back, &limit) || *limit != (trimsvc.LimitError{Size: 9, Limit: 8}) {
		t.Errorf("LimitError not restored with its figures: %#v", back)
	}
	// A status that names no service error stays a plain StatusError.
	back = trim.FromStatus(status.Error(codes.Unavailable, "down"))
	if errors.Unwrap(back) != nil {
		t.Errorf("Unavailable unwraps to %v, want nil", errors.Unwrap(back))
	}
}

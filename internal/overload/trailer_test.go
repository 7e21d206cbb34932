package overload

import (
	"context"
	"math"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/orca"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/emptypb"
)

func TestRoundTrip(t *testing.T) {
	for _, r := range []Report{{Utilization: 0.25, Limit: 40}, {Utilization: 1.5, Limit: 3}, {Utilization: 0}} {
		got, ok := Parse(Append(nil, r))
		if !ok || got != r {
			t.Errorf("Parse(Append(%+v)) = %+v, %v", r, got, ok)
		}
	}
}

func TestParseSkipsUnknownFieldsAndRefusesGarbage(t *testing.T) {
	// cpu_utilization (1), rps (3) and another named metric before ours.
	b := protowire.AppendTag(nil, 1, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, math.Float64bits(0.9))
	b = protowire.AppendTag(b, 3, protowire.VarintType)
	b = protowire.AppendVarint(b, 1000)
	entry := protowire.AppendTag(nil, 1, protowire.BytesType)
	entry = protowire.AppendString(entry, "queue")
	entry = protowire.AppendTag(entry, 2, protowire.Fixed64Type)
	entry = protowire.AppendFixed64(entry, math.Float64bits(7))
	b = protowire.AppendTag(b, fieldNamedMetrics, protowire.BytesType)
	b = protowire.AppendBytes(b, entry)
	b = Append(b, Report{Utilization: 0.5, Limit: 10})
	if got, ok := Parse(b); !ok || got != (Report{Utilization: 0.5, Limit: 10}) {
		t.Errorf("Parse = %+v, %v; want the report past unknown fields", got, ok)
	}
	for name, bad := range map[string][]byte{
		"truncated":      Append(nil, Report{Utilization: 0.5})[:5],
		"no utilization": protowire.AppendVarint(protowire.AppendTag(nil, 3, protowire.VarintType), 5),
		"NaN":            Append(nil, Report{Utilization: math.NaN()}),
		"negative":       Append(nil, Report{Utilization: -1}),
		"empty":          nil,
	} {
		if r, ok := Parse(bad); ok {
			t.Errorf("%s: Parse = %+v, true; want false", name, r)
		}
	}
}

// TestReadsWhatGRPCsORCAWrites serves a call through grpc-go's own ORCA
// per-call recorder and reads its trailer: the format is ORCA's.
func TestReadsWhatGRPCsORCAWrites(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(orca.CallMetricsServerOption(nil))
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: "test.Load",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Get", Handler: func(_ any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
			in := new(emptypb.Empty)
			if err := dec(in); err != nil {
				return nil, err
			}
			h := func(ctx context.Context, _ any) (any, error) {
				rec := orca.CallMetricsRecorderFromContext(ctx)
				rec.SetApplicationUtilization(0.75)
				rec.SetCPUUtilization(0.3)
				rec.SetNamedMetric(limitMetric, 12)
				return &emptypb.Empty{}, nil
			}
			return ic(ctx, in, &grpc.UnaryServerInfo{FullMethod: "/test.Load/Get"}, h)
		}}},
	}, nil)
	go func() { _ = s.Serve(lis) }()
	defer s.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var trailer metadata.MD
	if err := conn.Invoke(context.Background(), "/test.Load/Get", &emptypb.Empty{}, &emptypb.Empty{}, grpc.Trailer(&trailer)); err != nil {
		t.Fatal(err)
	}
	got, ok := FromTrailer(trailer)
	if !ok || got != (Report{Utilization: 0.75, Limit: 12}) {
		t.Errorf("FromTrailer(%v) = %+v, %v; want {0.75 12}", trailer, got, ok)
	}
}

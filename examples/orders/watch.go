package orders

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/examples/orders/orderspb"
)

// StreamEnd is how one WatchOrders stream of Watch ended.
type StreamEnd struct {
	Instance string // the address of the instance that held it, "" if none did
	Orders   int    // the orders it brought
	Err      error  // nil: the instance left, and ended it OK
}

// reopenPause is how long Watch waits before it opens a stream again after
// an open that failed: time for discovery and connections to catch up.
const reopenPause = 100 * time.Millisecond

// Watch follows the orders of req on one WatchOrders stream at a time
// over conn, a ClientConn of client.NewConn, giving each to onOrder. When
// a stream ends, OK because its instance left or with an error because it
// failed, Watch tells onEnd (which may be nil) and opens another: the
// ClientConn's balancer puts it on an instance that is in service. It
// returns when ctx ends, or with the error of an open that an instance
// refused for good (InvalidArgument, say).
func Watch(ctx context.Context, conn grpc.ClientConnInterface, req *orderspb.WatchOrdersRequest, onOrder func(*orderspb.Order), onEnd func(StreamEnd)) error {
	c := orderspb.NewOrdersClient(conn)
	for ctx.Err() == nil {
		var p peer.Peer
		end := StreamEnd{}
		stream, err := c.WatchOrders(ctx, req, grpc.Peer(&p))
		if err == nil {
			var o *orderspb.Order
			for o, err = stream.Recv(); err == nil; o, err = stream.Recv() {
				end.Orders++
				onOrder(o)
			}
			if errors.Is(err, io.EOF) {
				err = nil
			}
		}
		if p.Addr != nil {
			end.Instance = p.Addr.String()
		}
		if ctx.Err() != nil {
			break
		}
		end.Err = err
		if onEnd != nil {
			onEnd(end)
		}
		switch status.Code(err) {
		case codes.OK:
		case codes.InvalidArgument, codes.Unimplemented, codes.PermissionDenied, codes.Unauthenticated:
			return err
		default:
			t := time.NewTimer(reopenPause)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
	}
	return ctx.Err()
}

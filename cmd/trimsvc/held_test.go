package main

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/trimkit/trimkit/pb"
)

// heldCall is a TrimSpace call whose HTTP/2 HEADERS frame reached the server
// but whose DATA frame the client holds back until release: a request that
// is in flight on the server for as long as the test wants.
type heldCall struct {
	conn *holdingConn
	cc   *grpc.ClientConn
	done chan heldResult
}

type heldResult struct {
	out string
	err error
}

func newHeldCall(t *testing.T, addr string) *heldCall {
	t.Helper()
	hc := &holdingConn{gate: make(chan struct{}), held: make(chan struct{})}
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			hc.Conn = c
			return hc, nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := pb.NewTrimClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := client.TrimSpace(ctx, &pb.TrimRequest{S: "warm up"}); err != nil {
		t.Fatalf("warm-up call: %v", err)
	}
	hc.arm()
	call := &heldCall{conn: hc, cc: conn, done: make(chan heldResult, 1)}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		resp, err := client.TrimSpace(ctx, &pb.TrimRequest{S: " he ld "})
		call.done <- heldResult{out: resp.GetS(), err: err}
	}()
	// Its HEADERS frame has been written when the DATA frame is held; the
	// server opens the stream on reading it, long before anything the test
	// does next can stop the server (a SIGTERM is followed by the drain).
	select {
	case <-hc.held:
	case <-time.After(5 * time.Second):
		t.Fatal("the request's DATA frame was never held")
	}
	return call
}

// waitGoAway waits for the server to begin a graceful stop: its GOAWAY
// takes the connection out of READY while the held call still runs on it.
func (c *heldCall) waitGoAway(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for c.cc.GetState() == connectivity.Ready {
		if !c.cc.WaitForStateChange(ctx, connectivity.Ready) {
			t.Fatal("the server sent no GOAWAY within 10s")
		}
	}
}

// release lets the request's body go and returns the call's result.
func (c *heldCall) release() (string, error) {
	close(c.conn.gate)
	r := <-c.done
	return r.out, r.err
}

// holdingConn, once armed, holds back the first HTTP/2 DATA frame it is
// asked to write (and everything after it) until gate is closed.
type holdingConn struct {
	net.Conn
	mu    sync.Mutex
	armed bool
	gate  chan struct{}
	held  chan struct{}
}

func (c *holdingConn) arm() {
	c.mu.Lock()
	c.armed = true
	c.mu.Unlock()
}

func (c *holdingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.armed {
		return c.Conn.Write(p)
	}
	// Walk the frames: 3 bytes length, 1 byte type (0 is DATA), then flags,
	// stream ID and payload.
	for off := 0; off+9 <= len(p); {
		length := int(p[off])<<16 | int(p[off+1])<<8 | int(p[off+2])
		if p[off+3] == 0 && length > 0 {
			n, err := c.Conn.Write(p[:off])
			if err != nil {
				return n, err
			}
			c.armed = false
			close(c.held)
			<-c.gate
			m, err := c.Conn.Write(p[off:])
			return n + m, err
		}
		off += 9 + length
	}
	return c.Conn.Write(p)
}

package addrfile

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

func TestWriteThenWait(t *testing.T) {
	path := filepath.Join(t.TempDir(), "addr.json")
	want := Addrs{ServiceID: "trimsvc-::1-80", GRPC: "[::1]:80", Advertised: "[::1]:80"}
	written := make(chan error, 1)
	go func() {
		time.Sleep(30 * time.Millisecond) // the reader polls before the file exists
		written <- Write(path, want)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	have, err := Wait(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	if want != have {
		t.Errorf("want %+v, have %+v", want, have)
	}
}

func TestWaitGivesUpWhenWriterExits(t *testing.T) {
	exited := make(chan struct{})
	close(exited)
	if _, err := Wait(context.Background(), filepath.Join(t.TempDir(), "never"), exited); err == nil {
		t.Error("want an error once the writer exited")
	}
}

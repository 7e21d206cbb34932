// Package addrfile is the file in which trimsvc tells whoever started it
// where it listens (its -addr-file flag): one JSON object, written
// atomically once both listeners are bound, so that a reader never sees a
// partial file and nobody has to parse log lines.
package addrfile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Addrs is the content of the file.
type Addrs struct {
	// ServiceID is the ID the instance registers in Consul.
	ServiceID string `json:"service_id"`
	// GRPC is the address the gRPC listener is bound to.
	GRPC string `json:"grpc_addr"`
	// Advertised is the host:port registered in Consul.
	Advertised string `json:"advertised_addr"`
	// HTTP is the debug HTTP listener's address, "" when it is off.
	HTTP string `json:"http_addr,omitempty"`
}

// Write writes a to path atomically: to a temporary file in the same
// directory, then renamed.
func Write(path string, a Addrs) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".addr-*")
	if err != nil {
		return fmt.Errorf("addr file: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("addr file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("addr file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("addr file: %w", err)
	}
	return nil
}

// Wait polls for path until it exists, and reads it. It gives up when ctx
// ends or when exited (may be nil) is closed: the writer is gone.
func Wait(ctx context.Context, path string, exited <-chan struct{}) (Addrs, error) {
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			var a Addrs
			if err := json.Unmarshal(b, &a); err != nil {
				return Addrs{}, fmt.Errorf("addr file %s: %w", path, err)
			}
			return a, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return Addrs{}, err
		}
		select {
		case <-ctx.Done():
			return Addrs{}, fmt.Errorf("no addr file %s: %w", path, ctx.Err())
		case <-exited:
			return Addrs{}, fmt.Errorf("no addr file %s: the process exited", path)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

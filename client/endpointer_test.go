package client_test

import (
	"sync"
	"testing"

	"github.com/go-kit/kit/endpoint"
	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"go.uber.org/goleak"

	"github.com/trimkit/trimkit/client"
)

// Close may be called any number of times, from any goroutine: each call
// returns what the first did, once everything is closed, and every
// connection is closed once.
func TestEndpointerCloseIsIdempotent(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	for _, tc := range []struct {
		name  string
		close func(e *client.Endpointer) []error
	}{
		{"twice in a row", func(e *client.Endpointer) []error {
			return []error{e.Close(), e.Close(), e.Close()}
		}},
		{"concurrently", func(e *client.Endpointer) []error {
			errs := make([]error, 2)
			var wg sync.WaitGroup
			for i := range errs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[i] = e.Close()
				}()
			}
			wg.Wait()
			return append(errs, e.Close())
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakes(map[string]endpoint.Endpoint{"a": ok("a"), "b": ok("b")})
			e, err := client.NewEndpointer(kitsd.FixedInstancer{"a", "b"}, f.factory, log.NewNopLogger(), client.EndpointerConfig{})
			if err != nil {
				t.Fatal(err)
			}
			for i, err := range tc.close(e) {
				if err != nil {
					t.Errorf("Close %d: %v", i+1, err)
				}
			}
			// Close closes the connections before it returns.
			closed := map[string]int{}
			for len(f.closed) > 0 {
				closed[<-f.closed]++
			}
			if want, have := map[string]int{"a": 1, "b": 1}, closed; len(want) != len(have) || want["a"] != have["a"] || want["b"] != have["b"] {
				t.Errorf("closes: want %v, have %v", want, have)
			}
			if eps, _ := e.Endpoints(); len(eps) != 0 {
				t.Errorf("%d endpoints after Close", len(eps))
			}
		})
	}
	goleak.VerifyNone(t, leaks)
}

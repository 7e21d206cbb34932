// Through the client stack as configured by default, overloadrun measures
// the closed-loop capacity of the instances of -service, offers -factor
// times that in an open loop for -over, then a third of it for -after, and
// prints what happened as one JSON object (Result).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport/trim"
)

// Result is what overloadrun prints.
type Result struct {
	Capacity float64        `json:"capacity"` // calls/s, closed loop
	Offered  float64        `json:"offered"`  // calls/s during the overload
	Goodput  float64        `json:"goodput"`  // successful calls/s during the overload
	Failures map[string]int `json:"failures"` // during the overload, by kind
	// After the load dropped: failed calls by 100ms from the drop over
	// the first second, and the calls due later, with their failures.
	AfterFailed [10]int  `json:"after_failed"`
	LateCalls   int      `json:"late_calls"`
	LateFailed  int      `json:"late_failed"`
	LateErrors  []string `json:"late_errors"`
}

func main() {
	consul := flag.String("consul-addr", "", "the Consul agent")
	service := flag.String("service", "trimsvc", "the service to call")
	inputBytes := flag.Int("input-bytes", 96<<10, "the size of each input")
	factor := flag.Float64("factor", 3, "the overload, times the capacity")
	over := flag.Duration("over", 3*time.Second, "how long the overload lasts")
	after := flag.Duration("after", 3*time.Second, "how long the load after it lasts, at a third of the capacity")
	flag.Parse()
	r, err := run(*consul, *service, *inputBytes, *factor, *over, *after)
	if err != nil {
		fmt.Fprintln(os.Stderr, "overloadrun:", err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		fmt.Fprintln(os.Stderr, "overloadrun:", err)
		os.Exit(1)
	}
}

func run(consul, service string, inputBytes int, factor float64, over, after time.Duration) (Result, error) {
	c, err := trim.NewClient(client.Config{Consul: sd.ConsulConfig{Address: consul}, Service: service})
	if err != nil {
		return Result{}, err
	}
	defer c.Close()
	// Large inputs make the calls, not the load generator, the work.
	input := " " + strings.Repeat("trim me ", inputBytes/8) + " "
	ctx := context.Background()

	warm := loadgen.Start(ctx, c.Endpoint(), input, loadgen.Options{Callers: 6, Duration: time.Second, SummaryOnly: true})
	warm.Wait()
	sum, errs := warm.Summary()
	if sum.Failures > 0 {
		return Result{}, fmt.Errorf("closed loop: %d of %d calls failed: %v", sum.Failures, sum.Requests, errs)
	}
	r := Result{Capacity: sum.RPS, Offered: factor * sum.RPS, Failures: map[string]int{}}

	overload := loadgen.Start(ctx, c.Endpoint(), input, loadgen.Options{Rate: r.Offered, Duration: over})
	time.Sleep(over)
	dropped := time.Now()
	normal := loadgen.Start(ctx, c.Endpoint(), input, loadgen.Options{Rate: r.Capacity / 3, Duration: after})
	overCalls, took := overload.Wait()
	normalCalls, _ := normal.Wait()

	ok := 0
	for _, call := range overCalls {
		var throttled *client.ThrottledError
		switch {
		case call.Err == nil:
			ok++
		case errors.As(call.Err, &throttled):
			r.Failures["throttled"]++
		default:
			r.Failures[status.Code(call.Err).String()]++
		}
	}
	r.Goodput = float64(ok) / took.Seconds()
	for _, call := range normalCalls {
		since := call.Start.Sub(dropped)
		if since > time.Second {
			r.LateCalls++
		}
		if call.Err == nil {
			continue
		}
		if since <= time.Second {
			r.AfterFailed[min(max(0, int(since/(100*time.Millisecond))), len(r.AfterFailed)-1)]++
			continue
		}
		if r.LateFailed++; len(r.LateErrors) < 3 {
			r.LateErrors = append(r.LateErrors, fmt.Sprintf("due %v after the drop: %v", since.Round(time.Millisecond), call.Err))
		}
	}
	return r, nil
}

// Command manager is the manager of the manager/worker example (see
// package managerworker): it registers in Consul as "manager" with an HTTP
// check, takes the workers' check-ins, and sends jobs to the workers,
// least-loaded first, printing how many each one did. It stops after -jobs
// jobs, or on SIGTERM or SIGINT, and leaves Consul.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/examples/managerworker"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport/grpcserver"
	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
)

type config struct {
	consul   sd.ConsulConfig
	addr     string
	service  string
	workers  string
	balancer string
	need     int
	jobs     int
	rate     float64
	every    time.Duration
}

func main() {
	var c config
	fs := flag.NewFlagSet("manager", flag.ExitOnError)
	managerworker.ConsulFlags(fs, &c.consul)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:0", "HTTP listen address (host:port; port 0 picks a free one); registered as is")
	fs.StringVar(&c.service, "service", "manager", "the service name to register as")
	fs.StringVar(&c.workers, "worker-service", "worker", "the service name of the workers")
	fs.StringVar(&c.balancer, "balancer", client.LeastLoadedName, "how to pick a worker for each job: least-loaded, p2c or round-robin")
	fs.IntVar(&c.need, "workers", 1, "how many workers must check in before the jobs start")
	fs.IntVar(&c.jobs, "jobs", 0, "jobs to send, then stop; 0: until SIGTERM")
	fs.Float64Var(&c.rate, "rate", 200, "jobs a second")
	fs.DurationVar(&c.every, "print-every", 5*time.Second, "how often to print the jobs each worker did")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: manager [flags]\n\nRegisters in Consul as -service, waits for -workers check-ins, and sends\n-rate jobs a second to the -worker-service instances, least-loaded first.\n\n")
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:]) // ExitOnError: 0 for -help, 2 for a bad flag
	switch c.balancer {
	case client.RoundRobinName, client.P2CName, client.LeastLoadedName:
	default:
		fmt.Fprintf(os.Stderr, "manager: -balancer %q: must be %s, %s or %s\n", c.balancer, client.RoundRobinName, client.P2CName, client.LeastLoadedName)
		os.Exit(2)
	}
	if c.need < 0 || c.jobs < 0 || c.rate <= 0 || c.every <= 0 {
		fmt.Fprintln(os.Stderr, "manager: -workers and -jobs must not be negative, -rate and -print-every positive")
		os.Exit(2)
	}
	managerworker.Main("manager", func(ctx context.Context, logger log.Logger) error {
		return run(ctx, c, os.Stdout, logger)
	})
}

// manager keeps the check-ins and the jobs each worker did.
type manager struct {
	out       io.Writer
	mu        sync.Mutex
	checkedIn map[string]string // worker ID -> address
	arrived   chan struct{}     // a check-in came
	done      map[string]int    // worker ID -> jobs
	failed    int               // attempts that failed, sent again
	rejected  int               // jobs a worker refused
}

func run(ctx context.Context, c config, out io.Writer, logger log.Logger) error {
	consul, err := c.consul.NewClient()
	if err != nil {
		return err
	}
	lis, err := managerworker.Listen(c.addr, c.service)
	if err != nil {
		return err
	}
	m := &manager{out: out, checkedIn: map[string]string{}, arrived: make(chan struct{}, 1), done: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("POST "+managerworker.CheckInPath, m.checkIn)
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	reg := sd.Registration{ID: lis.ID, Name: c.service, Address: lis.Host, Port: lis.Port,
		CheckInterval: time.Second, CheckHTTPPath: "/health"}
	registrar, err := sd.NewRegistrar(consul, reg, logger)
	if err != nil {
		lis.Close()
		return err
	}
	workers, err := trim.NewClient(client.Config{
		Consul:     c.consul,
		Service:    c.workers,
		CallConfig: client.CallConfig{Balancer: c.balancer},
	}, client.WithLogger(logger))
	if err != nil {
		lis.Close()
		return err
	}
	defer workers.Close()

	// The work runs while the manager is registered; when it is done, the
	// manager leaves Consul and stops as on SIGTERM.
	ctx, finished := context.WithCancel(ctx)
	defer finished()
	work := func(ctx context.Context) error {
		defer finished()
		_ = level.Info(logger).Log("msg", "registered; waiting for workers to check in", "addr", lis.Addr(), "workers", c.need)
		if !m.waitCheckIns(ctx, c.need) {
			return nil // stopped before any work
		}
		start := time.Now()
		sent := m.send(ctx, workers.Endpoint(), c)
		m.print(fmt.Sprintf("sent %d jobs in %v", sent, time.Since(start).Round(time.Millisecond)))
		return nil
	}
	return grpcserver.Instance{
		Server:     grpcserver.HTTPServer(server),
		Listener:   lis,
		Registrar:  registrar,
		Background: []func(context.Context) error{work},
		Drain:      time.Nanosecond, // no caller of the manager's own to drain
		Logger:     logger,
	}.Run(ctx)
}

func (m *manager) checkIn(w http.ResponseWriter, r *http.Request) {
	var ci managerworker.CheckIn
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&ci); err != nil || ci.ID == "" || ci.Addr == "" {
		http.Error(w, "want a JSON check-in with id and addr", http.StatusBadRequest)
		return
	}
	m.mu.Lock()
	if _, again := m.checkedIn[ci.ID]; !again {
		fmt.Fprintf(m.out, "worker checked in: %s at %s\n", ci.ID, ci.Addr)
	}
	m.checkedIn[ci.ID] = ci.Addr
	m.mu.Unlock()
	select {
	case m.arrived <- struct{}{}:
	default:
	}
	w.WriteHeader(http.StatusNoContent)
}

// waitCheckIns waits until n workers have checked in; false when ctx ended
// first.
func (m *manager) waitCheckIns(ctx context.Context, n int) bool {
	for {
		m.mu.Lock()
		have := len(m.checkedIn)
		m.mu.Unlock()
		if have >= n {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-m.arrived:
		}
	}
}

// send sends jobs at c.rate, each on its own goroutine, until c.jobs are
// sent or ctx ends, and waits for them. A job whose call fails (no worker
// reachable for the moment, every attempt failed) is sent again a little
// later until it is done or ctx ends: no job is lost while the manager
// runs.
func (m *manager) send(ctx context.Context, e func(context.Context, any) (any, error), c config) int {
	tick := time.NewTicker(time.Duration(float64(time.Second) / c.rate))
	defer tick.Stop()
	report := time.NewTicker(c.every)
	defer report.Stop()
	var wg sync.WaitGroup
	sent := 0
	for c.jobs == 0 || sent < c.jobs {
		select {
		case <-ctx.Done():
			wg.Wait()
			return sent
		case <-report.C:
			m.print(fmt.Sprintf("%d jobs sent so far", sent))
			continue
		case <-tick.C:
		}
		sent++
		wg.Add(1)
		go func(job int) {
			defer wg.Done()
			m.job(ctx, e, job)
		}(sent)
	}
	wg.Wait()
	return sent
}

func (m *manager) job(ctx context.Context, e func(context.Context, any) (any, error), job int) {
	req := trimsvc.TrimRequest{S: fmt.Sprintf("  job %d  ", job)}
	for {
		resp, err := e(ctx, req)
		if err == nil {
			m.finish(job, resp.(trim.TrimResponse))
			return
		}
		m.mu.Lock()
		m.failed++
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// finish counts a job a worker answered.
func (m *manager) finish(job int, tr trim.TrimResponse) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if tr.Err != nil { // the job itself is wrong: sending it again will not help
		m.rejected++
		fmt.Fprintf(m.out, "job %d rejected by %s: %v\n", job, tr.Instance, tr.Err)
		return
	}
	m.done[tr.Instance]++
}

// print prints the jobs each worker did under a heading.
func (m *manager) print(heading string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	total := 0
	for _, n := range m.done {
		total += n
	}
	fmt.Fprintf(m.out, "%s: %d done, %d rejected, %d attempts failed and sent again\n", heading, total, m.rejected, m.failed)
	ids := make([]string, 0, len(m.done))
	for id := range m.done {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		fmt.Fprintf(m.out, "  %-32s %6d jobs\n", id, m.done[id])
	}
}

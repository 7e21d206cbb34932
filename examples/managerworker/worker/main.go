// Command worker is the worker of the manager/worker example (see package
// managerworker): a trim service that registers in Consul as "worker",
// reports its load in Consul KV, and checks in with every "manager" it
// finds. SIGTERM or SIGINT takes it out of Consul, drains and stops it.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"slices"
	"time"

	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"google.golang.org/grpc"

	"github.com/trimkit/trimkit/examples/managerworker"
	"github.com/trimkit/trimkit/pb"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport/grpcserver"
	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
)

type config struct {
	consul       sd.ConsulConfig
	addr         string
	service      string
	manager      string
	work         time.Duration
	slots        int
	loadInterval time.Duration
	drain        time.Duration
}

func main() {
	var c config
	fs := flag.NewFlagSet("worker", flag.ExitOnError)
	managerworker.ConsulFlags(fs, &c.consul)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:0", "gRPC listen address (host:port; port 0 picks a free one); registered as is")
	fs.StringVar(&c.service, "service", "worker", "the service name to register as")
	fs.StringVar(&c.manager, "manager", "manager", "the service name of the managers to check in with")
	fs.DurationVar(&c.work, "work", 2*time.Millisecond, "how long one job takes")
	fs.IntVar(&c.slots, "slots", 4, "jobs worked on at once; the rest wait")
	fs.DurationVar(&c.loadInterval, "load-report-interval", time.Second, "how often the load is reported in Consul KV")
	fs.DurationVar(&c.drain, "drain", time.Second, "how long to go on serving after deregistering, for callers to notice")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: worker [flags]\n\nServes trim jobs, registered in Consul as -service with its load in KV,\nand checks in with every -manager it finds.\n\n")
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:]) // ExitOnError: 0 for -help, 2 for a bad flag
	if c.slots < 1 || c.work < 0 || c.loadInterval <= 0 || c.drain < 0 {
		fmt.Fprintln(os.Stderr, "worker: -slots must be at least 1, -load-report-interval positive, -work and -drain not negative")
		os.Exit(2)
	}
	managerworker.Main("worker", func(ctx context.Context, logger log.Logger) error {
		return run(ctx, c, logger)
	})
}

func run(ctx context.Context, c config, logger log.Logger) error {
	consul, err := c.consul.NewClient()
	if err != nil {
		return err
	}
	lis, err := managerworker.Listen(c.addr, c.service)
	if err != nil {
		return err
	}
	defer lis.Close()
	addr, id := lis.Addr().String(), lis.ID
	logger = log.With(logger, "id", id)

	// The service: trim, at -slots jobs at a time of -work each, measured
	// for the load reports.
	svc, err := trimsvc.New(trimsvc.DefaultMaxInputBytes)
	if err != nil {
		return err
	}
	var meter trimsvc.LoadMeter
	svc = meter.Middleware()(slowed{slots: make(chan struct{}, c.slots), work: c.work, next: svc})
	server := grpc.NewServer()
	pb.RegisterTrimServer(server, trim.NewGRPCServer(trimsvc.NewServerSet(svc), id, logger))

	// Registered as <service>-<host>-<port> (the default ID, lis.ID), with
	// a fast check and the default deregister-after.
	reg := sd.Registration{Name: c.service, Address: lis.Host, Port: lis.Port, CheckInterval: time.Second}
	registrar, err := sd.NewRegistrar(consul, reg, logger)
	if err != nil {
		return err
	}
	reporter, err := sd.NewLoadReporter(consul, c.service, id, addr, reg.CheckID(), c.loadInterval, meter.Sample, logger)
	if err != nil {
		return err
	}

	// The instance's life: serve, register, and while registered report
	// the load and check in with the managers; on SIGTERM the load report
	// goes first, then the registration; it serves through the drain,
	// then stops gracefully.
	_ = level.Info(logger).Log("msg", "working", "addr", addr, "work", c.work, "slots", c.slots)
	err = (&grpcserver.Instance{
		Server:    server,
		Listener:  lis,
		Registrar: registrar,
		Background: []func(context.Context) error{
			reporter.Run,
			func(ctx context.Context) error {
				return checkIn(ctx, consul, c.service, c.manager, managerworker.CheckIn{ID: id, Addr: addr}, logger)
			},
		},
		ResyncInterval: 5 * time.Second,
		Drain:          max(c.drain, time.Nanosecond), // -drain 0: none
		Logger:         logger,
	}).Run(ctx)
	_ = level.Info(logger).Log("msg", "stopped")
	return err
}

// slowed makes each job take work, at most len(slots) at a time.
type slowed struct {
	slots chan struct{}
	work  time.Duration
	next  trimsvc.Service
}

func (s slowed) TrimSpace(ctx context.Context, in string) (string, error) {
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-s.slots }()
	t := time.NewTimer(s.work)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	return s.next.TrimSpace(ctx, in)
}

// checkIn waits until this worker's own check passes (it is ready for
// work), then watches the manager service and checks in with each passing
// manager it has not checked in with yet, until ctx ends. It fails only
// for a manager service it cannot watch (a bad name).
func checkIn(ctx context.Context, consul sd.Client, service, manager string, me managerworker.CheckIn, logger log.Logger) error {
	for !listedPassing(ctx, consul, service, me.ID) {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
	managers, err := sd.NewInstancer(consul, logger, manager, nil, true)
	if err != nil {
		return fmt.Errorf("watch the managers: %w", err)
	}
	defer managers.Stop()
	events := make(chan kitsd.Event, 1)
	managers.Register(events)
	defer managers.Deregister(events)
	checkedIn := map[string]bool{}
	retry := time.NewTicker(time.Second)
	defer retry.Stop()
	var current []string
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-events:
			if ev.Err != nil {
				continue // the Instancer logs it and keeps watching
			}
			current = ev.Instances
		case <-retry.C: // check in again where it failed
		}
		present := map[string]bool{}
		for _, m := range current {
			present[m] = true
			if checkedIn[m] {
				continue
			}
			if err := post(ctx, m, me); err != nil {
				_ = level.Warn(logger).Log("msg", "checking in with manager; trying again", "manager", m, "err", err)
				continue
			}
			checkedIn[m] = true
			_ = level.Info(logger).Log("msg", "checked in with manager", "manager", m)
		}
		for m := range checkedIn {
			if !present[m] {
				delete(checkedIn, m) // gone: check in again should it return
			}
		}
	}
}

func post(ctx context.Context, manager string, me managerworker.CheckIn) error {
	body, _ := json.Marshal(me)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+manager+managerworker.CheckInPath, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("manager answered %s", resp.Status)
	}
	return nil
}

// listedPassing reports whether Consul lists instance id of service as
// passing.
func listedPassing(ctx context.Context, consul sd.Client, service, id string) bool {
	entries, _, err := consul.Service(ctx, service, nil, true, nil)
	return err == nil && slices.ContainsFunc(entries, func(e sd.Entry) bool { return e.ID == id })
}

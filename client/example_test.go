package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
)

// The examples need a Consul agent and trimsvc instances: they have no
// Output comment, so they are compiled but not run. README.md shows their
// bodies (TestREADMEGoBlocksAreExamples keeps it so).

func ExampleNew() {
	ctx := context.Background()
	// trim.Endpoints makes the trim service's endpoint over each
	// instance's connection; trim.NewClient does all of this.
	c, err := client.New(client.Config{Consul: sd.ConsulConfig{Address: "127.0.0.1:8500"}, Service: "trimsvc"}, trim.Endpoints)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close() // stops discovery, closes every connection

	svc := trim.Service{TrimSpaceEndpoint: c.Endpoint()} // a trimsvc.Service
	out, err := svc.TrimSpace(ctx, " he llo ")
	switch {
	case errors.Is(err, trimsvc.ErrInputTooLarge):
		fmt.Println("too large: one attempt, InvalidArgument")
	case err != nil:
		fmt.Println(err)
	default:
		fmt.Println(out) // hello
	}
}

// The stack New builds, by hand: the same pieces go over any go-kit
// sd.Instancer.
func ExampleNewEndpointer() {
	ctx := context.Background()
	logger := log.NewLogfmtLogger(os.Stderr)
	consulAPI, err := api.NewClient(&api.Config{Address: "127.0.0.1:8500"})
	if err != nil {
		fmt.Println(err)
		return
	}
	instancer, err := sd.NewInstancer(sd.NewClient(consulAPI), logger, "trimsvc", nil, true)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer instancer.Stop()
	endpointer, err := client.NewEndpointer(instancer, client.Factory(trim.Endpoints), logger, client.EndpointerConfig{CloseGrace: 2 * time.Second})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer endpointer.Close()
	call, err := client.Retry(client.NewRoundRobin(endpointer), client.RetryConfig{MaxAttempts: 3})
	if err != nil {
		fmt.Println(err)
		return
	}
	svc := trim.Service{TrimSpaceEndpoint: call} // a trimsvc.Service
	out, err := svc.TrimSpace(ctx, " he llo ")
	fmt.Println(out, err)
}

// Handler serves the live page of what the process's clients see, beside
// the program's other debug endpoints; `curl -H 'Accept: application/json'`
// gets the same view as JSON.
func ExampleHandler() {
	mux := http.NewServeMux()
	mux.Handle("/debug/trimkit", client.Handler())
	srv := &http.Server{Addr: "127.0.0.1:8977", Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.ListenAndServe() }()
	defer srv.Close()
}

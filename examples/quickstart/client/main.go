// Command client is the README's client quick start: the orders service
// found in Consul, balanced, retried and ejected when it misbehaves.
package main

import (
	"context"
	"fmt"
	"log"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/examples/orders"
	"github.com/trimkit/trimkit/examples/orders/orderspb"
)

func main() {
	ctx := context.Background()
	c, err := client.New(client.Config{
		Service: "orders", // found through CONSUL_HTTP_ADDR, else 127.0.0.1:8500
		CallConfig: client.CallConfig{
			Balancer: client.P2CName,
			Retry:    client.RetryConfig{Idempotent: orders.Idempotent}, // CreateOrder is never sent twice
		},
	}, orders.Endpoints)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close() // stops discovery, closes every connection

	resp, err := c.Endpoint()(ctx, &orderspb.CreateOrderRequest{RequestId: "r-1", Item: "widget", Quantity: 2})
	if err != nil {
		log.Fatal(err) // its one attempt may have reached an instance, or no instance could take it
	}
	order := resp.(*orderspb.Order)
	fmt.Println("created", order.GetId(), "on", order.GetInstance())

	_, err = c.Endpoint()(ctx, &orderspb.GetOrderRequest{Id: order.GetId()})
	if status.Code(err) == codes.NotFound {
		fmt.Println("another instance answered: each keeps its own orders")
	}
}

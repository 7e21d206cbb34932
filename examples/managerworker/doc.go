// Package managerworker is an example of two services that find each other
// through Consul with trimkit, after the seed whose workers publish their
// load in Consul's KV store for a manager to send work to the least-loaded
// one.
//
//   - worker (examples/managerworker/worker) serves the trim service over
//     gRPC, registers as "worker" with a gRPC health check, publishes its
//     load (sd.LoadReporter), watches the "manager" service (sd.Instancer)
//     and checks in with each manager it finds once its own check passes.
//   - manager (examples/managerworker/manager) serves HTTP (/health, and
//     /checkin for the workers), registers as "manager" with an HTTP check,
//     and sends jobs to the workers through client.New with the
//     least-loaded balancer, printing how many each worker did.
//
// With a Consul agent on 127.0.0.1:8500 (make up starts one):
//
//	go run ./examples/managerworker/worker -work 2ms &
//	go run ./examples/managerworker/worker -work 20ms &
//	go run ./examples/managerworker/manager -workers 2 -jobs 1000
//
// The test in this directory runs exactly that against a real agent.
package managerworker

// CheckIn is what a worker posts, as JSON, to a manager's CheckInPath.
type CheckIn struct {
	// ID is the worker's service ID in Consul.
	ID string `json:"id"`
	// Addr is the host:port it serves on.
	Addr string `json:"addr"`
}

// CheckInPath is the manager's HTTP path for check-ins.
const CheckInPath = "/checkin"

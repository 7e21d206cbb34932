// Package proc runs trimkit's commands as processes for the demo, the tests
// and the benchmarks: children whose stderr is kept line by line and that
// die with their parent, waits for readiness (trimsvc's -addr-file), log
// lines and exit codes, SIGTERM-then-SIGKILL and reaping; and, for `make up`
// and `make down`, detached processes stopped later by recorded PID.
package proc

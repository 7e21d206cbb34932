// Package proc runs trimkit's commands as child processes for the demo and
// the tests: stderr kept line by line, waits for log lines and exit codes,
// and children that die with their parent unless detached.
package proc

// Package proctest runs the project's commands as real processes in tests:
// it builds a main package once, starts it with its stderr captured line by
// line, waits for log lines and exit codes, and reaps every process it
// started when the test ends, failed or not.
package proctest

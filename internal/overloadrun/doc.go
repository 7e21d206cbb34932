// Command overloadrun is the caller of client's end-to-end overload test
// (TestOverloadedFleetStaysUpAndRecovers), in a process of its own so that
// the instances, not a race-instrumented test binary, are what is
// overloaded.
package main

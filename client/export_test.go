package client

// EjectedCount is how many instances e has ejected now, for tests.
func EjectedCount(e *Endpointer) int {
	return len(e.snapshot().tiers[tierEjected])
}

// ReportedLoad is the load n's answers last reported, and whether one is
// fresh, for tests.
func ReportedLoad(n *Node) (float64, bool) {
	if !n.freshLoad(n.now()) {
		return 0, false
	}
	return n.reportedLoad(), true
}

// Instances are the instances e holds, for tests.
func Instances(e *Endpointer) []*Node { return e.snapshot().nodes }

// SubsetOrder is subsetOrder, for tests of subsetting.
func SubsetOrder(instances []string, size int, caller uint64) []string {
	return subsetOrder(instances, size, caller)
}

// Defaults and parsers the tests of client_test read.
var (
	DefaultRetryBudget = defaultRetryBudget
	ConsulTarget       = consulTarget
)

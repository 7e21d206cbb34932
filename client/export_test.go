package client

// EjectedCount is how many instances e has ejected now, for tests.
func EjectedCount(e *Endpointer) int {
	return len(e.snapshot().tiers[tierEjected])
}

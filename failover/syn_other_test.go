//go:build !linux

package failover

// rawSocketsAllowed: SYN probes are Linux-only.
func rawSocketsAllowed() bool { return false }

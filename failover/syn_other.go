//go:build !linux

package failover

import (
	"net/netip"
	"time"
)

// newConnectProber is the default prober without an HTTP path: raw SYN
// probes need Linux, so elsewhere it connects.
func newConnectProber(addr netip.AddrPort, timeout time.Duration) (Prober, string) {
	return &TCPProber{Addr: addr, Timeout: timeout}, "tcp connect"
}

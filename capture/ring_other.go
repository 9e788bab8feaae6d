//go:build !linux

package capture

import (
	"time"

	"golang.org/x/net/bpf"
)

// Ring is a packet receive ring; Linux only.
type Ring struct{}

// OpenRing returns ErrUnsupported.
func OpenRing(ifname string, filter []bpf.RawInstruction, cfg RingConfig) (*Ring, error) {
	return nil, ErrUnsupported
}

// Next reports no frame.
func (r *Ring) Next() (Frame, bool) { return Frame{}, false }

// Release does nothing.
func (r *Ring) Release() {}

// Fd returns -1.
func (r *Ring) Fd() int { return -1 }

// Stats returns ErrUnsupported.
func (r *Ring) Stats() (packets, drops uint64, err error) { return 0, 0, ErrUnsupported }

// Close does nothing.
func (r *Ring) Close() error { return nil }

// Wait returns ErrUnsupported.
func Wait(rings []*Ring, timeout time.Duration) error { return ErrUnsupported }

// Spin returns false.
func Spin(rings []*Ring, d time.Duration) bool { return false }

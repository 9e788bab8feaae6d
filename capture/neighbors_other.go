//go:build !linux

package capture

import (
	"context"
	"time"
)

// Neighbors resolves next-hop MACs; Linux only.
type Neighbors struct{}

// NewNeighbors returns ErrUnsupported.
func NewNeighbors(ctx context.Context, ifname string) (*Neighbors, error) { return nil, ErrUnsupported }

// Lookup reports a miss.
func (n *Neighbors) Lookup(ip [4]byte) ([6]byte, bool) { return [6]byte{}, false }

// Resolve returns ErrUnsupported.
func (n *Neighbors) Resolve(ctx context.Context, ip [4]byte, timeout time.Duration) ([6]byte, error) {
	return [6]byte{}, ErrUnsupported
}

// Close does nothing.
func (n *Neighbors) Close() {}

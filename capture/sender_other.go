//go:build !linux

package capture

import "understudy/rewrite"

// Sender transmits Ethernet frames; Linux only.
type Sender struct{}

// OpenSender returns ErrUnsupported.
func OpenSender(ifname string) (*Sender, error) { return nil, ErrUnsupported }

// KeepOffloads returns ErrUnsupported.
func (s *Sender) KeepOffloads() error { return ErrUnsupported }

// Send returns ErrUnsupported.
func (s *Sender) Send(frame []byte) error { return ErrUnsupported }

// MAC returns the zero address.
func (s *Sender) MAC() [6]byte { return [6]byte{} }

// BufferWaits returns 0.
func (s *Sender) BufferWaits() uint64 { return 0 }

// MTU returns 0.
func (s *Sender) MTU() int { return 0 }

// Fd returns -1.
func (s *Sender) Fd() int { return -1 }

// Close does nothing.
func (s *Sender) Close() error { return nil }

// Batch queues frames for one sender; Linux only.
type Batch struct{}

// NewBatch returns an empty batch whose frames all fail.
func (s *Sender) NewBatch(size, frameSize int, report func(frame []byte, err error)) *Batch {
	return &Batch{}
}

// Len returns 0.
func (b *Batch) Len() int { return 0 }

// Add counts the frame as failed.
func (b *Batch) Add(frame []byte) int { return 1 }

// AddOffload counts the frame as failed.
func (b *Batch) AddOffload(frame []byte, o rewrite.Offload) int { return 1 }

// Flush returns 0.
func (b *Batch) Flush() int { return 0 }

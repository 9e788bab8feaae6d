//go:build !linux

package capture

// Sender transmits Ethernet frames; Linux only.
type Sender struct{}

// OpenSender returns ErrUnsupported.
func OpenSender(ifname string) (*Sender, error) { return nil, ErrUnsupported }

// Send returns ErrUnsupported.
func (s *Sender) Send(frame []byte) error { return ErrUnsupported }

// MAC returns the zero address.
func (s *Sender) MAC() [6]byte { return [6]byte{} }

// MTU returns 0.
func (s *Sender) MTU() int { return 0 }

// Fd returns -1.
func (s *Sender) Fd() int { return -1 }

// Close does nothing.
func (s *Sender) Close() error { return nil }

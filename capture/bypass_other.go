//go:build !linux

package capture

// Bypass is the gateway's nftables state; Linux only.
type Bypass struct{}

// InstallBypass returns ErrUnsupported.
func InstallBypass(cfg BypassConfig) (*Bypass, error) { return nil, ErrUnsupported }

// Counters returns ErrUnsupported.
func (b *Bypass) Counters() (BypassCounters, error) { return BypassCounters{}, ErrUnsupported }

// Remove returns nil.
func (b *Bypass) Remove() error { return nil }

// BypassPresent returns ErrUnsupported.
func BypassPresent() (bool, error) { return false, ErrUnsupported }

// Installed returns ErrUnsupported.
func (b *Bypass) Installed() (bool, error) { return false, ErrUnsupported }

//go:build !linux

package capture

// DisableOffloads returns ErrUnsupported.
func DisableOffloads(ifname string) (changed []string, err error) { return nil, ErrUnsupported }

// CheckSuperFrameSize returns ErrUnsupported.
func CheckSuperFrameSize(ifname string) error { return ErrUnsupported }

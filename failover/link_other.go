//go:build !linux

package failover

import (
	"context"
	"errors"
	"fmt"
)

// Run fails: carrier events come from Linux netlink.
func (w *LinkWatcher) Run(ctx context.Context) error {
	return fmt.Errorf("failover: watch link %s: %w", w.Iface, errors.ErrUnsupported)
}

package failover

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Run watches the interface until ctx ends; it returns nil then. It fails
// at once if the interface does not exist; later failures of the netlink
// subscription are logged and the subscription renewed.
func (w *LinkWatcher) Run(ctx context.Context) error {
	if _, err := netlink.LinkByName(w.Iface); err != nil {
		return fmt.Errorf("failover: watch link %s: %w", w.Iface, err)
	}
	var st linkState
	for {
		err := w.watch(ctx, &st)
		if ctx.Err() != nil {
			return nil
		}
		w.log().Warn("link watch interrupted; resubscribing", "iface", w.Iface, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(linkRetry):
		}
	}
}

type linkState struct {
	known, carrier bool
}

// watch subscribes to link notifications and reports changes until ctx
// ends or the subscription fails. The subscription lists existing links
// first, so the current state is read on the same socket as the changes
// and no change can fall between reading the state and subscribing.
func (w *LinkWatcher) watch(ctx context.Context, st *linkState) error {
	ch := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	errc := make(chan error, 1)
	opts := netlink.LinkSubscribeOptions{
		ListExisting: true,
		ErrorCallback: func(err error) {
			select {
			case errc <- err:
			default:
			}
		},
	}
	if err := netlink.LinkSubscribeWithOptions(ch, done, opts); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	defer func() {
		close(done)
		for range ch { // the receiver goroutine closes ch once its socket is closed
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-ch:
			if !ok {
				select {
				case err := <-errc:
					return err
				default:
					return errors.New("subscription closed")
				}
			}
			attrs := u.Link.Attrs()
			if attrs == nil || attrs.Name != w.Iface {
				continue
			}
			ev := LinkEvent{
				Iface:   w.Iface,
				Carrier: u.Flags&unix.IFF_UP != 0 && u.Flags&unix.IFF_LOWER_UP != 0,
				State:   attrs.OperState.String(),
				At:      time.Now(),
			}
			if u.Header.Type == unix.RTM_DELLINK {
				ev.Carrier, ev.State = false, "absent"
			}
			if st.known && st.carrier == ev.Carrier {
				continue
			}
			st.known, st.carrier = true, ev.Carrier
			if w.OnChange != nil {
				w.OnChange(ev)
			}
		}
	}
}

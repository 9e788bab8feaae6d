package failover

import (
	"log/slog"
	"time"
)

// LinkEvent is a change of an interface's carrier.
type LinkEvent struct {
	Iface string
	// Carrier is true when frames can pass: the interface is
	// administratively up and has its lower layer (IFF_LOWER_UP).
	Carrier bool
	// State is the kernel's operational state ("up", "lower-layer-down",
	// "down", ...), or "absent" once the interface is deleted.
	State string
	At    time.Time
}

// Cause describes the event for a Transition or a log line.
func (e LinkEvent) Cause() string {
	if e.Carrier {
		return "carrier back on " + e.Iface
	}
	return "carrier lost on " + e.Iface + " (" + e.State + ")"
}

// LinkWatcher reports carrier changes of one interface, the gateway's
// server-side one: losing its carrier makes every server behind it
// unreachable at once, long before Misses probes have failed.
type LinkWatcher struct {
	Iface string
	// OnChange is called from Run's goroutine, first with the state when
	// the watch starts and then on every change of Carrier (never twice
	// in a row with the same Carrier). It must not block for long.
	OnChange func(LinkEvent)
	Log      *slog.Logger // nil: slog.Default()
}

// linkRetry paces resubscription after the kernel's notifications failed
// (e.g. the socket's buffer overran): state is re-read on resubscribing.
const linkRetry = 100 * time.Millisecond

func (w *LinkWatcher) log() *slog.Logger {
	if w.Log != nil {
		return w.Log
	}
	return slog.Default()
}

package failover

import (
	"fmt"
	"strings"
	"sync"
	"time"
)

// Server indexes. The primary is active and the backup standby at start.
const (
	Primary = 0
	Backup  = 1
	None    = -1 // no server holds the role
)

// HistoryLen is how many actions Arbiter.History keeps.
const HistoryLen = 16

// ActionKind says what the datapath must do after a health change.
type ActionKind uint8

const (
	// NoAction: roles are unchanged.
	NoAction ActionKind = iota
	// Takeover: the active server From failed (or was failed over by the
	// operator); every flow switches to To at once, From is fenced.
	Takeover
	// StandbyLost: the standby Server failed; stop gating on it, flows
	// continue unprotected on the active server.
	StandbyLost
	// ServiceDown: the active Server failed with no standby to take
	// over; no server is active until one comes up.
	ServiceDown
	// Reintegrate: Server is healthy again and becomes the standby for
	// new flows; flows already single-legged stay so.
	Reintegrate
	// Activate: no server was active and Server came up; it becomes
	// active for new flows.
	Activate
)

func (k ActionKind) String() string {
	switch k {
	case NoAction:
		return "none"
	case Takeover:
		return "takeover"
	case StandbyLost:
		return "standby-lost"
	case ServiceDown:
		return "service-down"
	case Reintegrate:
		return "reintegrate"
	case Activate:
		return "activate"
	}
	return fmt.Sprintf("action(%d)", uint8(k))
}

// MarshalText makes ActionKind read as a word in JSON status output.
func (k ActionKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText reads the word MarshalText wrote, so status decodes.
func (k *ActionKind) UnmarshalText(b []byte) error {
	for v := NoAction; v <= Activate; v++ {
		if v.String() == string(b) {
			*k = v
			return nil
		}
	}
	return fmt.Errorf("failover: unknown action %q", b)
}

// Action is a role change for the datapath to carry out.
type Action struct {
	Kind ActionKind `json:"kind"`
	// Server is the server the action is about: the failed one for
	// Takeover, StandbyLost and ServiceDown, the one gaining a role for
	// Reintegrate and Activate. None for NoAction.
	Server int `json:"server"`
	// From and To are the old and new active server of a Takeover; None
	// otherwise.
	From int `json:"from"`
	To   int `json:"to"`
	// Manual marks the operator's failover. The old active server is
	// healthy as far as its probes know: the datapath must fence it with
	// Monitor.Fence so that it returns only after Rise good probes.
	Manual bool      `json:"manual,omitempty"`
	At     time.Time `json:"at"`
	Cause  string    `json:"cause"`
}

func (a Action) String() string {
	switch a.Kind {
	case NoAction:
		return "none"
	case Takeover:
		m := ""
		if a.Manual {
			m = " (manual)"
		}
		return fmt.Sprintf("takeover %d -> %d%s: %s", a.From, a.To, m, a.Cause)
	}
	return fmt.Sprintf("%s %d: %s", a.Kind, a.Server, a.Cause)
}

// Roles is a snapshot of who serves the client.
type Roles struct {
	Active  int       `json:"active"`  // index, or None
	Standby int       `json:"standby"` // index, or None
	Health  [2]Health `json:"health"`
	Names   [2]string `json:"names"`
}

// Role names server i's role: "active", "standby" or "out" (failed,
// fenced, or waiting to be reintegrated).
func (r Roles) Role(i int) string {
	switch i {
	case r.Active:
		return "active"
	case r.Standby:
		return "standby"
	}
	return "out"
}

func (r Roles) String() string {
	name := func(i int) string {
		if i == None {
			return "none"
		}
		return r.Names[i]
	}
	return fmt.Sprintf("active=%s standby=%s %s=%s %s=%s", name(r.Active), name(r.Standby),
		r.Names[0], r.Health[0], r.Names[1], r.Health[1])
}

// Arbiter decides the roles of two servers from their health transitions
// and the operator's commands. It does no I/O; the caller passes the time.
// It is safe for concurrent use (the status reader runs beside the
// datapath), but the datapath should be its only writer so that it carries
// out the actions in the order they were decided.
type Arbiter struct {
	mu      sync.Mutex
	names   [2]string
	health  [2]Health
	active  int
	standby int
	hist    [HistoryLen]Action
	nhist   int // actions ever recorded
}

// NewArbiter returns an arbiter with server 0 active and server 1 standby,
// both of unknown health. Empty names default to "primary" and "backup".
func NewArbiter(names [2]string) *Arbiter {
	if names[0] == "" {
		names[0] = "primary"
	}
	if names[1] == "" {
		names[1] = "backup"
	}
	return &Arbiter{names: names, active: Primary, standby: Backup}
}

// Apply feeds a detector's transition: ServerDown for Down, ServerUp for
// Up; anything else changes nothing.
func (a *Arbiter) Apply(t Transition) Action {
	switch t.To {
	case Down:
		return a.ServerDown(t.Server, t.At, t.Cause)
	case Up:
		return a.ServerUp(t.Server, t.At, t.Cause)
	}
	return noAction()
}

// ServerDown records that server i failed and returns what to do. A
// standby of unknown health (not yet Rise good probes) still takes over:
// it holds every byte, and the alternative is losing every flow.
// Repeating it changes nothing.
func (a *Arbiter) ServerDown(i int, at time.Time, cause string) Action {
	if i != Primary && i != Backup {
		return noAction()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.health[i] == Down {
		return noAction()
	}
	a.health[i] = Down
	switch i {
	case a.active:
		if a.standby != None && a.health[a.standby] != Down {
			to := a.standby
			a.active, a.standby = to, None
			return a.record(Action{Kind: Takeover, Server: i, From: i, To: to, At: at, Cause: cause})
		}
		a.active = None
		return a.record(Action{Kind: ServiceDown, Server: i, From: None, To: None, At: at, Cause: cause})
	case a.standby:
		a.standby = None
		return a.record(Action{Kind: StandbyLost, Server: i, From: None, To: None, At: at, Cause: cause})
	}
	return noAction()
}

// ServerUp records that server i is healthy and returns what to do: it
// becomes active if no server is, else the standby for new flows if there
// is none. Repeating it changes nothing.
func (a *Arbiter) ServerUp(i int, at time.Time, cause string) Action {
	if i != Primary && i != Backup {
		return noAction()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.health[i] == Up {
		return noAction()
	}
	a.health[i] = Up
	switch {
	case a.active == None:
		a.active = i
		if a.standby == i {
			a.standby = None
		}
		return a.record(Action{Kind: Activate, Server: i, From: None, To: None, At: at, Cause: cause})
	case a.standby == None && i != a.active:
		a.standby = i
		return a.record(Action{Kind: Reintegrate, Server: i, From: None, To: None, At: at, Cause: cause})
	}
	return noAction()
}

// Manual is the operator's failover: it moves the active role to the
// standby. to names the server that must become active ("primary",
// "backup", or the configured names, any case); empty means the standby.
// The old active server is marked down (fenced); the returned Action has
// Manual set, and the datapath must fence the old active in its detector
// too (Monitor.Fence) so that it returns, as standby, only after Rise good
// probes.
func (a *Arbiter) Manual(to string, at time.Time) (Action, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var target int
	switch {
	case to == "":
		target = a.standby
	case strings.EqualFold(to, "primary") || strings.EqualFold(to, a.names[Primary]):
		target = Primary
	case strings.EqualFold(to, "backup") || strings.EqualFold(to, a.names[Backup]):
		target = Backup
	default:
		return noAction(), fmt.Errorf("failover to %q: unknown server (want primary, backup or nothing for the standby)", to)
	}
	switch {
	case a.active == None:
		return noAction(), fmt.Errorf("failover: no server is active (both down); nothing to fail over from")
	case target == None:
		return noAction(), fmt.Errorf("failover: no standby to take over from %s (%s is %s; a failed server becomes standby after its probes succeed again)",
			a.names[a.active], a.names[1-a.active], a.health[1-a.active])
	case target == a.active:
		return noAction(), fmt.Errorf("failover to %s: it is already active", a.names[target])
	case target != a.standby || a.health[target] == Down:
		return noAction(), fmt.Errorf("failover to %s: it is not a healthy standby (health %s; a failed server becomes standby after its probes succeed again)",
			a.names[target], a.health[target])
	}
	from := a.active
	a.health[from] = Down
	a.active, a.standby = target, None
	return a.record(Action{Kind: Takeover, Server: from, From: from, To: target, Manual: true, At: at,
		Cause: fmt.Sprintf("manual failover from %s to %s", a.names[from], a.names[target])}), nil
}

// Roles returns the current roles and health.
func (a *Arbiter) Roles() Roles {
	a.mu.Lock()
	defer a.mu.Unlock()
	return Roles{Active: a.active, Standby: a.standby, Health: a.health, Names: a.names}
}

// History returns up to HistoryLen most recent actions, oldest first.
func (a *Arbiter) History() []Action {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := min(a.nhist, HistoryLen)
	out := make([]Action, 0, n)
	for k := a.nhist - n; k < a.nhist; k++ {
		out = append(out, a.hist[k%HistoryLen])
	}
	return out
}

func (a *Arbiter) record(act Action) Action {
	a.hist[a.nhist%HistoryLen] = act
	a.nhist++
	return act
}

func noAction() Action { return Action{Kind: NoAction, Server: None, From: None, To: None} }

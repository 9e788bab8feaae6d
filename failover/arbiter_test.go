package failover

import (
	"strings"
	"testing"
	"time"
)

// event is one input to an arbiter in a scripted test.
type event struct {
	op     string // "down", "up", "manual"
	server int    // for down and up
	to     string // for manual
	want   Action // Kind, Server, From, To, Manual are compared
	err    string // for manual: substring of the expected error
	roles  [2]int // active, standby after the event
}

func TestArbiterScripts(t *testing.T) {
	none := Action{Kind: NoAction, Server: None, From: None, To: None}
	takeover := func(from, to int) Action { return Action{Kind: Takeover, Server: from, From: from, To: to} }
	kind := func(k ActionKind, s int) Action { return Action{Kind: k, Server: s, From: None, To: None} }
	down := func(s int, want Action, active, standby int) event {
		return event{op: "down", server: s, want: want, roles: [2]int{active, standby}}
	}
	up := func(s int, want Action, active, standby int) event {
		return event{op: "up", server: s, want: want, roles: [2]int{active, standby}}
	}
	manual := func(to string, want Action, err string, active, standby int) event {
		return event{op: "manual", to: to, want: want, err: err, roles: [2]int{active, standby}}
	}
	manualTakeover := func(from, to int) Action { a := takeover(from, to); a.Manual = true; return a }

	tests := []struct {
		name   string
		events []event
	}{
		{"start: both come up, no role change", []event{
			up(Primary, none, Primary, Backup), up(Backup, none, Primary, Backup),
		}},
		{"primary fails: takeover", []event{
			up(Primary, none, Primary, Backup), up(Backup, none, Primary, Backup),
			down(Primary, takeover(Primary, Backup), Backup, None),
			down(Primary, none, Backup, None), // idempotent
		}},
		{"primary fails before the backup confirmed: takeover to unknown standby", []event{
			down(Primary, takeover(Primary, Backup), Backup, None),
		}},
		{"backup fails: standby lost", []event{
			up(Primary, none, Primary, Backup), up(Backup, none, Primary, Backup),
			down(Backup, kind(StandbyLost, Backup), Primary, None),
			down(Backup, none, Primary, None),
		}},
		{"backup fails then primary: service down", []event{
			down(Backup, kind(StandbyLost, Backup), Primary, None),
			down(Primary, kind(ServiceDown, Primary), None, None),
			down(Primary, none, None, None),
			up(Backup, kind(Activate, Backup), Backup, None),
			up(Primary, kind(Reintegrate, Primary), Backup, Primary),
		}},
		{"service down, the same server returns", []event{
			down(Backup, kind(StandbyLost, Backup), Primary, None),
			down(Primary, kind(ServiceDown, Primary), None, None),
			up(Primary, kind(Activate, Primary), Primary, None),
			up(Backup, kind(Reintegrate, Backup), Primary, Backup),
		}},
		{"repeated failover", []event{
			up(Primary, none, Primary, Backup), up(Backup, none, Primary, Backup),
			down(Primary, takeover(Primary, Backup), Backup, None),
			up(Primary, kind(Reintegrate, Primary), Backup, Primary),
			up(Primary, none, Backup, Primary), // idempotent
			down(Backup, takeover(Backup, Primary), Primary, None),
			up(Backup, kind(Reintegrate, Backup), Primary, Backup),
			down(Primary, takeover(Primary, Backup), Backup, None),
		}},
		{"backup lost and reintegrated", []event{
			up(Primary, none, Primary, Backup),
			down(Backup, kind(StandbyLost, Backup), Primary, None),
			up(Backup, kind(Reintegrate, Backup), Primary, Backup),
			down(Primary, takeover(Primary, Backup), Backup, None),
		}},
		{"manual to the standby", []event{
			up(Primary, none, Primary, Backup), up(Backup, none, Primary, Backup),
			manual("", manualTakeover(Primary, Backup), "", Backup, None),
			down(Primary, none, Backup, None), // the fence's own transition
			up(Primary, kind(Reintegrate, Primary), Backup, Primary),
			manual("primary", manualTakeover(Backup, Primary), "", Primary, None),
			up(Backup, kind(Reintegrate, Backup), Primary, Backup),
		}},
		{"manual by name", []event{
			manual("BACKUP", manualTakeover(Primary, Backup), "", Backup, None),
		}},
		{"manual without a standby", []event{
			down(Backup, kind(StandbyLost, Backup), Primary, None),
			manual("", none, "no standby to take over from primary (backup is down", Primary, None),
			manual("backup", none, "backup: it is not a healthy standby (health down", Primary, None),
		}},
		{"manual to the active", []event{
			manual("primary", none, "failover to primary: it is already active", Primary, Backup),
		}},
		{"manual with nothing active", []event{
			down(Backup, kind(StandbyLost, Backup), Primary, None),
			down(Primary, kind(ServiceDown, Primary), None, None),
			manual("", none, "no server is active", None, None),
		}},
		{"manual to an unknown name", []event{
			manual("tertiary", none, `unknown server`, Primary, Backup),
		}},
		{"bad index ignored", []event{
			down(5, none, Primary, Backup), up(-1, none, Primary, Backup),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := NewArbiter([2]string{})
			now := t0
			var recorded []Action
			for k, e := range tc.events {
				now = now.Add(time.Millisecond)
				var got Action
				var err error
				switch e.op {
				case "down":
					got = a.ServerDown(e.server, now, "cause")
				case "up":
					got = a.ServerUp(e.server, now, "cause")
				case "manual":
					got, err = a.Manual(e.to, now)
				default:
					t.Fatalf("bad op %q", e.op)
				}
				if e.err == "" && err != nil {
					t.Fatalf("event %d (%s): %v", k, e.op, err)
				}
				if e.err != "" && (err == nil || !strings.Contains(err.Error(), e.err)) {
					t.Fatalf("event %d (%s): error %v, want one containing %q", k, e.op, err, e.err)
				}
				cmp := Action{Kind: got.Kind, Server: got.Server, From: got.From, To: got.To, Manual: got.Manual}
				if cmp != e.want {
					t.Fatalf("event %d (%s %d %q): action %+v, want %+v", k, e.op, e.server, e.to, cmp, e.want)
				}
				if got.Kind != NoAction {
					if !got.At.Equal(now) || got.Cause == "" {
						t.Fatalf("event %d: action time/cause %v %q", k, got.At, got.Cause)
					}
					recorded = append(recorded, got)
				}
				r := a.Roles()
				if r.Active != e.roles[0] || r.Standby != e.roles[1] {
					t.Fatalf("event %d (%s %d %q): roles %v, want active=%d standby=%d", k, e.op, e.server, e.to, r, e.roles[0], e.roles[1])
				}
				if r.Active != None && r.Active == r.Standby {
					t.Fatalf("event %d: %d both active and standby", k, r.Active)
				}
			}
			hist := a.History()
			if len(hist) != len(recorded) {
				t.Fatalf("history has %d actions, want %d", len(hist), len(recorded))
			}
			for k := range hist {
				if hist[k] != recorded[k] {
					t.Fatalf("history[%d] = %v, want %v", k, hist[k], recorded[k])
				}
			}
		})
	}
}

func TestArbiterApplyAndRoles(t *testing.T) {
	a := NewArbiter([2]string{"web1", "web2"})
	d0 := NewDetector(Primary, "web1", Config{Misses: 1, Rise: 1})
	d1 := NewDetector(Backup, "web2", Config{Misses: 1, Rise: 1})
	for _, d := range []*Detector{d0, d1} {
		tr, _ := d.Observe(t0, true, "")
		if act := a.Apply(tr); act.Kind != NoAction {
			t.Fatalf("apply %v: %v", tr, act)
		}
	}
	tr, _ := d0.Observe(t0.Add(time.Millisecond), false, "probe: refused")
	act := a.Apply(tr)
	if act.Kind != Takeover || act.From != Primary || act.To != Backup || act.Cause != "probe: refused" {
		t.Fatalf("apply %v: %v", tr, act)
	}
	r := a.Roles()
	if got := r.String(); got != "active=web2 standby=none web1=down web2=up" {
		t.Fatalf("roles %q", got)
	}
	if r.Role(Primary) != "out" || r.Role(Backup) != "active" {
		t.Fatalf("Role: %q %q", r.Role(Primary), r.Role(Backup))
	}
	if _, err := a.Manual("web1", t0); err == nil || !strings.Contains(err.Error(), "web1") {
		t.Fatalf("manual to a failed server: %v", err)
	}
	if act := a.Apply(Transition{Server: Primary, To: Unknown}); act.Kind != NoAction {
		t.Fatalf("apply to unknown: %v", act)
	}
}

func TestArbiterHistoryWraps(t *testing.T) {
	a := NewArbiter([2]string{})
	var last Action
	for k := 0; k < HistoryLen+5; k++ {
		at := t0.Add(time.Duration(k) * time.Second)
		// Alternate failovers between the two servers.
		from := a.Roles().Active
		last = a.ServerDown(from, at, "fail")
		if last.Kind != Takeover {
			t.Fatalf("round %d: %v", k, last)
		}
		a.ServerUp(from, at, "back")
	}
	h := a.History()
	if len(h) != HistoryLen {
		t.Fatalf("history len %d", len(h))
	}
	if h[len(h)-1].Kind != Reintegrate || !h[len(h)-2].At.Equal(last.At) || h[len(h)-2] != last {
		t.Fatalf("history tail %v %v, want takeover then reintegrate", h[len(h)-2], h[len(h)-1])
	}
	for k := 1; k < len(h); k++ {
		if h[k].At.Before(h[k-1].At) {
			t.Fatalf("history out of order at %d", k)
		}
	}
}

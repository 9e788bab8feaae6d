package datapath

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"understudy/failover"
	"understudy/tcpstate"
)

func TestNewFlowRoles(t *testing.T) {
	cases := []struct {
		name            string
		active, standby int
		drained         [2]bool
		live, shadow    int
		why             string
	}{
		{"none drained", 0, 1, [2]bool{}, 0, 1, "no_standby"},
		{"standby drained", 0, 1, [2]bool{false, true}, 0, -1, "drained"},
		{"active drained", 0, 1, [2]bool{true, false}, 1, -1, "drained"},
		{"active drained after takeover", 1, 0, [2]bool{false, true}, 0, -1, "drained"},
		{"active drained, no standby: it keeps new flows", 0, -1, [2]bool{true, false}, 0, -1, "no_standby"},
		{"both drained: the active keeps new flows", 0, 1, [2]bool{true, true}, 0, -1, "drained"},
		{"no standby", 1, -1, [2]bool{}, 1, -1, "no_standby"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			live, shadow, why := newFlowRoles(tc.active, tc.standby, tc.drained)
			if live != tc.live || shadow != tc.shadow || why != tc.why {
				t.Fatalf("got live %d shadow %d why %q, want %d %d %q", live, shadow, why, tc.live, tc.shadow, tc.why)
			}
		})
	}
}

// drainGateway is a Gateway with just what Drain, ManualFailover and their
// checks use. Its monitor never probes: transitions come from Fence.
func drainGateway(t *testing.T) *Gateway {
	t.Helper()
	g := bareGateway()
	g.mon = idleMonitor(t, 0)
	return g
}

// idleMonitor is a monitor that never probes, with an Events channel of
// buffer transitions (0: the default).
func idleMonitor(t *testing.T, buffer int) *failover.Monitor {
	t.Helper()
	mon, err := failover.NewMonitor(failover.MonitorConfig{
		Config:      failover.Config{Interval: time.Hour},
		Probers:     [2]failover.Prober{idleProber{}, idleProber{}},
		EventBuffer: buffer,
		Log:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return mon
}

// bareGateway is a Gateway with a flow table and roles, and no monitor.
func bareGateway() *Gateway {
	g := &Gateway{log: slog.New(slog.NewTextHandler(io.Discard, nil)), names: [2]string{"primary", "backup"}}
	g.arb = failover.NewArbiter(g.names)
	g.table = tcpstate.New(tcpstate.Config{})
	return g
}

// idleProber is never called: the test's monitor does not run.
type idleProber struct{}

func (idleProber) Probe(context.Context) error { return nil }

// TestStandbyDownFirst: both servers' failures reported at once (carrier
// loss on the server interface) leave the flows where they are: the
// standby's is taken first, whichever comes first on Events, so no takeover
// moves them to a standby that is down too.
func TestStandbyDownFirst(t *testing.T) {
	for _, order := range [][2]int{{failover.Primary, failover.Backup}, {failover.Backup, failover.Primary}} {
		g := drainGateway(t)
		g.arb.ServerUp(failover.Primary, time.Now(), "up")
		g.arb.ServerUp(failover.Backup, time.Now(), "up")
		for _, s := range order {
			g.mon.Fence(s, "carrier lost")
		}
		g.events(0)
		for _, act := range g.arb.History() {
			if act.Kind == failover.Takeover {
				t.Fatalf("order %v: %v; want no takeover", order, g.arb.History())
			}
		}
		if r := g.arb.Roles(); r.Active != failover.None || r.Standby != failover.None {
			t.Fatalf("order %v: roles %s, want none", order, r)
		}
	}
}

// TestRecoverDroppedTransitions: a failure whose transition the monitor
// dropped (its channel full) still reaches the roles: the loop, seeing the
// drop count grow, makes them follow the detectors.
func TestRecoverDroppedTransitions(t *testing.T) {
	g := bareGateway()
	g.mon = idleMonitor(t, 1)
	g.arb.ServerUp(failover.Primary, time.Now(), "up")
	g.arb.ServerUp(failover.Backup, time.Now(), "up")
	g.mon.Fence(failover.Backup, "probe timeouts")  // queued
	g.mon.Fence(failover.Primary, "probe timeouts") // dropped: the channel holds one
	if g.mon.Dropped() != 1 {
		t.Fatalf("%d transitions dropped, want 1", g.mon.Dropped())
	}
	g.events(0)
	if r := g.arb.Roles(); r.Active != failover.None || r.Health[failover.Primary] != failover.Down {
		t.Fatalf("roles %s: the primary's dropped failure was not taken", r)
	}
	g.events(0) // nothing new: nothing more to do
	if n := len(g.arb.History()); n != 2 {
		t.Fatalf("history %v, want the standby lost and the service down", g.arb.History())
	}
}

// TestOperatorSeesPendingFailure: a server's failure the loop has not
// taken yet (it waits for frames without the lock) is taken before an
// operator's command decides on the roles.
func TestOperatorSeesPendingFailure(t *testing.T) {
	g := drainGateway(t)
	g.arb.ServerUp(failover.Primary, time.Now(), "up")
	g.arb.ServerUp(failover.Backup, time.Now(), "up")
	g.mon.Fence(failover.Backup, "probe timeouts") // queued, not yet taken
	if _, err := g.ManualFailover(""); err == nil {
		t.Fatalf("manual failover to the failed backup accepted; roles %s", g.arb.Roles())
	}
	if r := g.arb.Roles(); r.Active != failover.Primary || r.Standby != failover.None {
		t.Fatalf("roles %s, want the primary active and no standby", r)
	}
	g = drainGateway(t)
	g.arb.ServerUp(failover.Primary, time.Now(), "up")
	g.arb.ServerUp(failover.Backup, time.Now(), "up")
	g.mon.Fence(failover.Backup, "probe timeouts")
	if _, err := g.Drain("primary", true); err == nil || !strings.Contains(err.Error(), "out of service") {
		t.Fatalf("draining the primary while the backup's failure waits: %v, want refused", err)
	}
}

func TestDrain(t *testing.T) {
	g := drainGateway(t)
	steps := []struct {
		name    string
		server  string
		on      bool
		setup   func()
		wantErr string
		live    string
		shadow  string
		why     string
	}{
		{name: "unknown server", server: "tertiary", on: true, wantErr: `unknown server "tertiary": use primary or backup`},
		{name: "drain primary", server: "primary", on: true, live: "backup", why: "drained"},
		{name: "drain again is no change", server: "Primary", on: true, live: "backup", why: "drained"},
		{name: "drain the other too", server: "backup", on: true, wantErr: "cannot drain backup: primary is drained already; undrain it first"},
		{name: "undrain primary", server: "primary", on: false, live: "primary", shadow: "backup"},
		{name: "drain backup", server: "backup", on: true, live: "primary", why: "drained"},
		{name: "undrain backup", server: "backup", on: false, live: "primary", shadow: "backup"},
		{name: "backup down: draining primary refused", server: "primary", on: true,
			setup:   func() { g.carryOut(g.arb.ServerDown(failover.Backup, time.Now(), "probe"), failover.Transition{}, 0) },
			wantErr: "cannot drain primary: backup is out of service (health down), so new flows would still go to primary"},
		{name: "backup down: draining it is fine", server: "backup", on: true, live: "primary", why: "no_standby"},
	}
	for _, s := range steps {
		if s.setup != nil {
			s.setup()
		}
		res, err := g.Drain(s.server, s.on)
		if s.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), s.wantErr) {
				t.Fatalf("%s: error %v, want %q", s.name, err, s.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if nf := res.NewFlows; nf.Live != s.live || nf.Shadow != s.shadow || (s.shadow == "" && nf.Why != s.why) {
			t.Fatalf("%s: new flows %+v, want live %q shadow %q why %q", s.name, nf, s.live, s.shadow, s.why)
		}
		if res.Drained != s.on {
			t.Fatalf("%s: drained %v", s.name, res.Drained)
		}
	}
}

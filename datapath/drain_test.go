package datapath

import (
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

// drainGateway is a Gateway with just what Drain and its checks use.
func drainGateway() *Gateway {
	g := &Gateway{log: slog.New(slog.NewTextHandler(io.Discard, nil)), names: [2]string{"primary", "backup"}}
	g.arb = failover.NewArbiter(g.names)
	g.table = tcpstate.New(tcpstate.Config{})
	return g
}

func TestDrain(t *testing.T) {
	g := drainGateway()
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

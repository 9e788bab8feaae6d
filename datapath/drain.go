package datapath

import (
	"fmt"
	"strings"
	"time"

	"understudy/failover"
	"understudy/tcpstate"
)

// Draining a server takes it out of new flows while the flows it already
// carries finish. A new flow then runs on the other server alone,
// unprotected with reason "drained": replicating it to the drained server
// would keep that server busy, and replicating it nowhere else is all there
// is with two servers. A drained server still takes over existing flows if
// the other one fails; that is what those flows need.

// DrainResult is what `understudy drain` reports.
type DrainResult struct {
	Server  string `json:"server"`
	Drained bool   `json:"drained"`
	// Flows still using the server: it is free when this reaches 0.
	Flows    int          `json:"flows"`
	NewFlows NewFlowRoles `json:"new_flows"`
}

// NewFlowRoles says which servers new flows get.
type NewFlowRoles struct {
	Live   string `json:"live"`             // "" when no server is active
	Shadow string `json:"shadow,omitempty"` // "" when new flows are unprotected
	Why    string `json:"why,omitempty"`    // why new flows are unprotected
}

// newFlowRoles applies the drained servers to the arbiter's roles. A
// drained server keeps new flows only when no other server can take them.
func newFlowRoles(active, standby int, drained [2]bool) (live, shadow int, why string) {
	why = "no_standby"
	if standby >= 0 && drained[standby] {
		standby, why = -1, "drained"
	}
	if active >= 0 && drained[active] && standby >= 0 {
		active, standby, why = standby, -1, "drained"
	}
	return active, standby, why
}

// applyRoles sets the flow table's roles for new flows from the arbiter's
// roles and the drained servers. Called with g.mu held.
func (g *Gateway) applyRoles() {
	r := g.arb.Roles()
	if r.Active == failover.None {
		return
	}
	live, shadow, why := newFlowRoles(r.Active, r.Standby, g.drained)
	g.table.SetRolesWhy(live, shadow, why)
}

// serverIndex resolves an operator's server name.
func (g *Gateway) serverIndex(name string) (int, error) {
	for i, n := range g.names {
		if strings.EqualFold(name, n) {
			return i, nil
		}
	}
	return 0, fmt.Errorf("unknown server %q: use primary or backup", name)
}

// Drain takes server out of new flows (on) or returns it (off). Draining
// is refused when the other server could not take the new flows: they
// would keep going to the drained one.
func (g *Gateway) Drain(server string, on bool) (DrainResult, error) {
	i, err := g.serverIndex(server)
	if err != nil {
		return DrainResult{}, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.events(int64(time.Since(g.start))) // the roles as they are (ManualFailover)
	if on && !g.drained[i] {
		o := 1 - i
		r := g.arb.Roles()
		switch {
		case g.drained[o]:
			return DrainResult{}, fmt.Errorf("cannot drain %s: %s is drained already; undrain it first (understudy drain --undo %s)", g.names[i], g.names[o], g.names[o])
		case r.Role(o) == "out":
			return DrainResult{}, fmt.Errorf("cannot drain %s: %s is out of service (health %s), so new flows would still go to %s; wait until %s is back (understudy status)",
				g.names[i], g.names[o], r.Health[o], g.names[i], g.names[o])
		}
	}
	using := g.flowsUsing(i)
	if g.drained[i] != on {
		g.drained[i] = on
		g.applyRoles()
		g.log.Info("drain", "server", g.names[i], "drained", on, "flows_using_it", using)
	}
	return DrainResult{Server: g.names[i], Drained: on, Flows: using, NewFlows: g.newFlows()}, nil
}

// flowsUsing counts the open flows with a leg on server. Called with g.mu held.
func (g *Gateway) flowsUsing(server int) int {
	n := 0
	g.table.ForEach(func(f *tcpstate.Flow) {
		if f.Uses(server) {
			n++
		}
	})
	return n
}

// newFlows names the servers new flows get. Called with g.mu held.
func (g *Gateway) newFlows() NewFlowRoles {
	active, standby := g.table.Roles()
	var nf NewFlowRoles
	if r := g.arb.Roles(); r.Active == failover.None {
		return nf
	}
	nf.Live = g.names[active]
	if standby >= 0 {
		nf.Shadow = g.names[standby]
	} else {
		nf.Why = g.table.AloneWhy()
	}
	return nf
}

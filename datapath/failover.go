package datapath

import (
	"fmt"
	"time"

	"understudy/failover"
	"understudy/tcpstate"
)

// Failover is the last role change that moved flows, for status.
type Failover struct {
	At         time.Time `json:"at"`
	Server     string    `json:"server"` // the server that failed
	Cause      string    `json:"cause"`
	Manual     bool      `json:"manual"`
	DetectedMS float64   `json:"detected_ms"` // first missed probe to decision
	FlowsMoved int       `json:"flows_moved"`
	FlowsReset int       `json:"flows_reset"`
	FlowsAlone int       `json:"flows_unprotected"`
	StallFlows int       `json:"stall_flows"`  // moved flows that were mid-transfer
	MaxStallMS float64   `json:"max_stall_ms"` // longest wait such a client had
}

// events takes the monitor's transitions without waiting and acts on them.
// Called by the loop with g.mu held.
func (g *Gateway) events(now int64) {
	for {
		select {
		case tr := <-g.mon.Events():
			g.apply(tr, now)
		default:
			g.recoverDropped(now)
			g.evidence()
			return
		}
	}
}

// apply makes the roles and the flow table follow tr. The active server's
// failure waits for the other's, if its detector has it and its transition
// is not taken yet: carrier loss on the server interface reports both at
// once, and a takeover by a standby already lost would move every flow off
// a server that may come back on the same link.
func (g *Gateway) apply(tr failover.Transition, now int64) {
	if tr.To == failover.Down && tr.Server == g.arb.Roles().Active {
		g.follow(1-tr.Server, failover.Down, tr.At, now)
	}
	g.carryOut(g.arb.Apply(tr), tr, now)
}

// follow applies server i's state as its detector has it now (Monitor.Health)
// if that is h and the roles have yet to take it.
func (g *Gateway) follow(i int, h failover.Health, at time.Time, now int64) {
	if got, cause := g.mon.Health(i); got == h && g.arb.Roles().Health[i] != h {
		g.apply(failover.Transition{Server: i, Name: g.names[i], To: h, At: at, Cause: cause}, now)
	}
}

// recoverDropped makes the roles follow the detectors when the monitor
// dropped transitions (its channel was full): detectors report changes
// only, so a lost Down would otherwise leave a dead server active for good.
func (g *Gateway) recoverDropped(now int64) {
	d := g.mon.Dropped()
	if d == g.droppedSeen {
		return
	}
	g.droppedSeen = d
	g.log.Warn("failover events were dropped: roles follow the detectors' state now")
	for _, h := range []failover.Health{failover.Down, failover.Up} { // failures first
		for i := range g.names {
			g.follow(i, h, time.Now(), now)
		}
	}
}

// carryOut makes the flow table follow a role change.
func (g *Gateway) carryOut(act failover.Action, tr failover.Transition, now int64) {
	switch act.Kind {
	case failover.ServiceDown:
		// No server can take over. Resetting every flow would turn a false
		// alarm into an outage; the flows stay with the server, which may
		// still answer, and new flows go to it until another comes up.
		g.log.Error("no standby to take over: flows stay on the failed server",
			"server", g.names[act.Server], "cause", act.Cause)
	case failover.Takeover, failover.StandbyLost:
		failed := act.Server
		if act.Kind == failover.Takeover {
			failed = act.From
		}
		rec := g.table.ServerDown(now, failed, act.Cause)
		if act.Kind == failover.Takeover {
			g.failovers++
		}
		g.last = &Failover{
			At: act.At, Server: g.names[failed], Cause: act.Cause, Manual: act.Manual,
			FlowsMoved: rec.FlowsMoved, FlowsReset: rec.FlowsReset, FlowsAlone: rec.FlowsAlone,
		}
		if !tr.FirstMiss.IsZero() && !act.Manual {
			g.last.DetectedMS = ms(tr.At.Sub(tr.FirstMiss))
			g.detection.Observe(tr.At.Sub(tr.FirstMiss))
		}
		g.log.Warn("failover", "action", act.Kind.String(), "failed", g.names[failed], "cause", act.Cause,
			"flows_moved", rec.FlowsMoved, "flows_reset", rec.FlowsReset, "flows_unprotected", rec.FlowsAlone,
			"detected_ms", g.last.DetectedMS)
	case failover.Reintegrate, failover.Activate:
		g.log.Info("server back", "action", act.Kind.String(), "server", g.names[act.Server], "cause", act.Cause)
	}
	g.applyRoles()
}

// evidence passes per-flow failure signals (a reset or an early FIN from
// the live server of a protected flow, or client data it leaves
// unacknowledged while the shadow has it) to the detector of the active server.
func (g *Gateway) evidence() {
	c := &g.table.Stats.Counters
	n := c[tcpstate.PrimaryRSTs] + c[tcpstate.PrematureFins] + c[tcpstate.AckLags]
	if n == g.evidenceSeen {
		return
	}
	g.evidenceSeen = n
	if r := g.arb.Roles(); r.Active != failover.None {
		g.mon.Evidence(r.Active, "evidence: the active server reset, closed early or stopped acknowledging a protected flow")
	}
}

// ManualFailover moves the active role to the standby now, as the
// operator's `understudy failover` asks; to names the server that should
// become active ("" for the standby).
func (g *Gateway) ManualFailover(to string) (*Failover, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	// Decide on the roles as they are: a failure the loop has not taken
	// yet (it waits for frames without the lock) would otherwise be
	// learned only after the flows moved to the failed server.
	g.events(int64(time.Since(g.start)))
	act, err := g.arb.Manual(to, time.Now())
	if err != nil {
		return nil, err
	}
	if act.Kind != failover.Takeover {
		return nil, fmt.Errorf("nothing to do: %s", act)
	}
	g.carryOut(act, failover.Transition{}, int64(time.Since(g.start)))
	// The old active server returns as standby only after good probes.
	g.mon.Fence(act.From, "manual failover")
	last := *g.last
	return &last, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// lastFailover completes the record with what the flow table measured
// since: stalls are known only once the moved flows have sent again.
func (g *Gateway) lastFailover() *Failover {
	if g.last == nil {
		return nil
	}
	l := *g.last
	if rec, ok := g.table.LastFailover(); ok {
		l.StallFlows = rec.StallFlows
		l.MaxStallMS = ms(time.Duration(rec.MaxStall))
	}
	return &l
}

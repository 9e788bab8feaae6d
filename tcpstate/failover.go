package tcpstate

import (
	"time"

	"understudy/rewrite"
)

// Work a flow owes, done by Flush or Tick as output room allows: after a
// takeover, and the acknowledgements of shadow legs, coalesced per batch.
const (
	kickFence0    uint8 = 1 << iota // RST to leg 0's server: clear its stale state
	kickFence1                      // RST to leg 1's server
	kickClientRST                   // the flow cannot be saved: tell the client clearly
	kickSynAck                      // the new live leg may answer the handshake
	kickRelease                     // gating changed: ack, window or FIN for the client
	kickReplay                      // replay buffered bytes the client is missing
	kickAck0                        // leg 0's server is owed an ACK of its stream
	kickAck1                        // leg 1's server is owed an ACK of its stream
)

// FailoverRecord describes the last server failure the table acted on.
type FailoverRecord struct {
	At         int64  // monotonic ns
	Server     int    // index into Config.Servers
	Cause      string // what detected it
	FlowsMoved int    // flows whose live leg switched to the other server
	FlowsReset int    // flows reset: diverged, or no other leg to take over
	FlowsAlone int    // flows that lost their shadow leg and go on unprotected
	StallFlows int    // moved flows that were mid-transfer
	MaxStall   int64  // ns: longest gap the client saw in such a flow
}

// SetRoles chooses the servers of new flows' legs: active carries the
// client-visible stream, standby (-1: none) shadows it.
func (t *Table) SetRoles(active, standby int) { t.SetRolesWhy(active, standby, "no_standby") }

// SetRolesWhy is SetRoles naming why new flows have no shadow when standby
// is -1: "drained" when the operator took the other server out of new flows.
func (t *Table) SetRolesWhy(active, standby int, why string) {
	t.active, t.standby, t.aloneWhy = active, standby, why
}

// AloneWhy says why new flows are unprotected while there is no standby.
func (t *Table) AloneWhy() string { return t.aloneWhy }

// Roles returns the servers new flows use.
func (t *Table) Roles() (active, standby int) { return t.active, t.standby }

// LastFailover returns the record of the last server failure.
func (t *Table) LastFailover() (FailoverRecord, bool) { return t.last, t.hasLast }

// legOf returns the leg of f on server s.
func legOf(f *Flow, s int) (uint8, bool) {
	for i := range f.legs {
		if int(f.legs[i].server) == s && (i == 0 || f.legs[1].server != f.legs[0].server) {
			return uint8(i), true
		}
	}
	return 0, false
}

// ServerDown takes a failed server out of every flow at once: where it was
// the live leg the shadow takes over, where it was the shadow the flow goes
// on unprotected, and it is fenced: nothing more of it reaches the client.
// The frames this requires are emitted by the following Tick calls.
func (t *Table) ServerDown(now int64, server int, cause string) FailoverRecord {
	t.now = now
	t.last = FailoverRecord{At: now, Server: server, Cause: cause}
	t.hasLast = true
	for _, f := range t.flows {
		i, ok := legOf(f, server)
		if !ok || !f.legs[i].up {
			continue
		}
		if f.state == StateClosed || f.state == StateTimeWait || f.finSent && f.cli.fin {
			// Both directions are closed as far as the client knows:
			// nothing to carry on, and a reset would only confuse it. The
			// client may still wait for the ACK of its FIN, which the
			// other leg gives from now on (gated).
			f.legs[i].up = false
			if i == f.live {
				t.kick(f, kickRelease)
			}
			continue
		}
		if i == f.live {
			t.takeover(f, i)
		} else {
			if f.prot == Protected {
				t.last.FlowsAlone++
			}
			t.shadowLost(f, i, "standby_failed")
		}
	}
	return t.last
}

// takeover moves f off its live leg failed.
func (t *Table) takeover(f *Flow, failed uint8) {
	o := other(failed)
	ol := &f.legs[o]
	f.legs[failed].up = false
	t.kick(f, kickFence0<<failed)
	splice := f.legs[f.vis].offset(f.nxtSent)
	if f.finSent {
		splice-- // the FIN's sequence number is no byte of the reply
	}
	if !ol.up || f.prot != Protected {
		t.note(f, EventReset, "no_shadow", f.legs[failed].server)
		t.resetFlow(f)
		return
	}
	if f.cmp.divergedAt(o, splice) {
		t.resetDiverged(f, f.legs[failed].server)
		return
	}
	f.live = o
	if f.cmp != nil {
		// The new live leg's bytes below the splice are duplicates to the
		// client; its first byte past it must continue the same reply.
		f.cmp.splice = splice
	}
	f.prot, f.why = Unprotected, "took_over"
	t.note(f, EventTakeover, "", f.legs[failed].server)
	f.takenOver = true
	t.count(Takeovers)
	t.last.FlowsMoved++
	if !f.synAckSent {
		t.kick(f, kickSynAck)
		return
	}
	visOff := f.legs[f.vis].offset(f.nxtSent)
	if f.pending() {
		f.stallFrom = f.lastToClient
	}
	// From what the client acknowledged: bytes lost on their way to it
	// before the failure are resent at once too.
	f.replayNext = visOff
	if f.cli.hasAck {
		f.replayNext = f.legs[f.vis].offset(f.cli.ack)
	}
	if f.cmp.diverged() {
		// Judged at the splice (divergedAt): until a comparison agrees,
		// none of the new leg's bytes go to the client, not even the
		// buffered ones it may lack; the leg resends those itself.
		t.kick(f, kickRelease)
		return
	}
	t.kick(f, kickRelease|kickReplay)
}

// pending reports whether the client was waiting on something when the live
// leg failed: bytes it had not been sent, acknowledged or answered.
func (f *Flow) pending() bool {
	if f.cli.hasAck && f.cli.ack.LessThan(f.nxtSent) {
		return true
	}
	if f.ackSent.LessThan(f.cli.nxt) {
		return true
	}
	o := &f.legs[f.live]
	return int32(o.offset(o.sndNxt)-f.legs[f.vis].offset(f.nxtSent)) > 0
}

// resetFlow ends a flow that cannot be saved with a clean reset to the
// client and to any leg still in it: a clear indication beats a hang or a
// reply spliced from two different streams.
func (t *Table) resetFlow(f *Flow) {
	for i := range f.legs {
		if f.legs[i].up {
			f.legs[i].up = false
			t.kick(f, kickFence0<<i)
		}
	}
	if f.synAckSent {
		t.kick(f, kickClientRST)
		f.resetByGateway = true
	}
	t.last.FlowsReset++
	t.count(FlowsReset)
	t.setState(f, StateClosed, t.now)
	t.dropReplay(f)
}

// shadowLost removes the shadow leg i: the flow goes on with its live leg,
// and the leg's server gets a reset so it frees the connection.
func (t *Table) shadowLost(f *Flow, i uint8, why string) {
	if !f.legs[i].up {
		return
	}
	f.legs[i].up = false
	t.kick(f, kickFence0<<i|kickRelease)
	if f.prot == Protected {
		f.prot, f.why = Unprotected, why
		t.count(FlowsUnprotected)
		t.note(f, EventUnprotected, why, f.legs[i].server)
	}
	t.dropReplay(f)
	if !f.synAckSent {
		t.kick(f, kickSynAck)
	}
}

func (t *Table) kick(f *Flow, k uint8) {
	if f.kicks == 0 {
		t.kicked = append(t.kicked, f)
	}
	f.kicks |= k
}

// runKicks does the owed work of kicked flows, in order, while out has
// room. A head index keeps a takeover of many flows linear: the slice is
// compacted only when half of it is done.
func (t *Table) runKicks(out *Output) (more bool) {
	for t.kickHead < len(t.kicked) {
		f := t.kicked[t.kickHead]
		if !f.deleted && !t.runKick(f, out) {
			more = true
			break
		}
		t.kicked[t.kickHead] = nil
		t.kickHead++
	}
	if t.kickHead == len(t.kicked) {
		t.kicked, t.kickHead = t.kicked[:0], 0
	} else if t.kickHead > len(t.kicked)/2 {
		n := copy(t.kicked, t.kicked[t.kickHead:])
		t.kicked, t.kickHead = t.kicked[:n], 0
	}
	return more
}

// runKick returns false if out filled before f's work was done.
func (t *Table) runKick(f *Flow, out *Output) bool {
	for i := uint8(0); i < 2; i++ {
		if f.kicks&(kickFence0<<i) != 0 {
			if !out.room(1) {
				return false
			}
			t.rstToServer(f, i, out)
			t.count(Fenced)
			f.kicks &^= kickFence0 << i
		}
	}
	for i := uint8(0); i < 2; i++ {
		if f.kicks&(kickAck0<<i) != 0 {
			if !out.room(1) {
				return false
			}
			t.ackOwed(f, i, out)
			f.kicks &^= kickAck0 << i
		}
	}
	if f.kicks&kickClientRST != 0 {
		if !out.room(1) {
			return false
		}
		t.segToClient(f, f.clientRcvNxt(), rewrite.RST|rewrite.ACK, nil, nil, out)
		f.kicks &^= kickClientRST
	}
	if f.kicks&kickSynAck != 0 {
		if !out.room(1) {
			return false
		}
		f.kicks &^= kickSynAck
		t.maybeReleaseSynAck(t.now, f, out)
	}
	if f.kicks&kickReplay != 0 {
		if !t.replayToClient(f, out) {
			return false
		}
		f.kicks &^= kickReplay
	}
	if f.kicks&kickRelease != 0 {
		if !out.room(2) {
			return false
		}
		f.kicks &^= kickRelease
		t.deliverHeldFin(f, f.live, out)
		t.release(f, false, out)
	}
	f.kicks = 0
	return true
}

// replayToClient sends the client the buffered bytes of the new live leg
// it has not been sent, within its receive window. It returns false if out
// filled first; the rest follows as the window opens.
func (t *Table) replayToClient(f *Flow, out *Output) bool {
	r := &f.replay
	vis := &f.legs[f.vis]
	// The client's MSS counts no options; ours carry timestamps.
	mss := int(f.cli.opt.mss)
	if f.legs[f.live].opt.hasTS && f.cli.opt.hasTS {
		mss -= 12
	}
	if mss <= 0 || mss > chunkSize {
		mss = 536
	}
	if f.cli.hasAck {
		// The client may have acknowledged more since the takeover (the
		// failed leg's last bytes), and the chunks below that are freed.
		if a := vis.offset(f.cli.ack); int32(a-f.replayNext) > 0 {
			f.replayNext = a
		}
	}
	for int32(r.end-f.replayNext) > 0 {
		// The client's receive window bounds what may be in flight to it.
		edge := vis.offset(f.cli.ack) + uint32(f.cli.win)<<f.cliShift()
		if int32(edge-f.replayNext) <= 0 {
			return true
		}
		data := r.at(f.replayNext, min(mss, int(edge-f.replayNext)))
		if len(data) == 0 {
			return true // trimmed, or a gap: the leg resends the rest
		}
		if !out.room(1) {
			return false
		}
		if !t.segToClient(f, vis.at(f.replayNext), rewrite.ACK|rewrite.PSH, data, nil, out) {
			return true // never skip bytes: the leg's own retransmission covers them
		}
		f.replayNext += uint32(len(data))
		t.Stats.Counters[ReplayedBytes] += uint64(len(data))
		if end := vis.at(f.replayNext); f.nxtSent.LessThan(end) {
			f.nxtSent = end
		}
	}
	return true
}

// cliShift is the window scale the client applies to the windows it sends.
func (f *Flow) cliShift() uint8 {
	if f.cli.opt.hasWS && f.legs[f.vis].opt.hasWS {
		return f.cli.opt.ws
	}
	return 0
}

// noteStall records, on the first frame a moved flow's client receives, how
// long it waited.
func (t *Table) noteStall(f *Flow) {
	f.lastToClient = t.now
	if f.stallFrom == 0 {
		return
	}
	stall := t.now - f.stallFrom
	f.stallFrom = 0
	t.Stats.Stalls.Observe(time.Duration(stall))
	t.last.StallFlows++
	if stall > t.last.MaxStall {
		t.last.MaxStall = stall
	}
}

package tcpstate

import "understudy/rewrite"

// The lead bound keeps the two servers in lockstep on the reply side.
// Gating makes the client wait for the slower server's ack of its bytes,
// but nothing it sees waits for the shadow's reply: on a busy host the
// shadow falls behind by as many requests as the client's window lets it
// queue (64 keep-alive clients at full rate put a backup 107k requests behind
// in 25 s), a takeover then stalls the client until the shadow has
// worked them all off, and the backlog starves the shadow's host until its
// health probes fail. So the live leg is offered a window that lets its
// stream run at most MaxLead bytes ahead of what the shadow has sent. The
// window offered never shrinks (RFC 9293 §3.8.6), and a shadow that sends
// nothing for LeadPause while it holds the live leg back lets it go a step
// further, and one quiet for LeadWait leaves the flow.

// leadBound reports whether f's live leg is held to its shadow's pace. A
// flow that looks diverged is held too: a backup that lags by more than two
// blocks is compared by whole blocks, and one whose Date header ticked past
// the primary's differs in every block that holds one.
func (t *Table) leadBound(f *Flow) bool {
	return t.cfg.MaxLead > 0 && f.protectedPair() && f.legs[f.live].synAck &&
		f.legs[other(f.live)].synAck
}

// leadLimit is the right edge, in the live leg's space, the lead bound
// allows it: MaxLead past the shadow's last byte, and any grace a quiet
// shadow gave (pauseLeads).
func (t *Table) leadLimit(f *Flow) rewrite.Seq {
	live, sh := &f.legs[f.live], &f.legs[other(f.live)]
	return live.at(sh.offset(sh.sndNxt) + uint32(t.cfg.MaxLead) + f.leadGrace)
}

// offeredEdge is the right edge leg i would be offered with ack a (its
// space): the client's own, narrowed for the live leg to the lead bound but
// never below what it was offered already.
func (t *Table) offeredEdge(f *Flow, i uint8, a rewrite.Seq) (edge rewrite.Seq, narrowed bool) {
	edge = a.Add(uint32(f.cli.win) << f.cliShift())
	if i != f.live || !t.leadBound(f) {
		return edge, false
	}
	if lim := rewrite.SeqMax(t.leadLimit(f), f.leadEdge); lim.LessThan(edge) {
		return lim, true
	}
	return edge, false
}

// offeredWindow is the window field a segment to the live leg i that
// acknowledges a (its space) carries, and whether the lead bound narrowed
// it. It changes nothing: windowTo records what was offered.
func (t *Table) offeredWindow(f *Flow, i uint8, a rewrite.Seq) (w uint16, narrowed bool) {
	edge, narrowed := t.offeredEdge(f, i, a)
	if !narrowed {
		return f.cli.win, false
	}
	if d := edge.Sub(a); d > 0 {
		shift := f.cliShift()
		w = uint16(uint32(d) >> shift)
		if a.Add(uint32(w) << shift).LessThan(f.leadEdge) {
			w++ // the field counts 1<<shift bytes: not below an edge offered before
		}
	}
	return w, true
}

// windowTo returns the window field of a segment to leg i that acknowledges
// a (its space), and records what the live leg was offered.
func (t *Table) windowTo(f *Flow, i uint8, a rewrite.Seq) uint16 {
	if i != f.live {
		return f.cli.win
	}
	w, narrowed := t.offeredWindow(f, i, a)
	if narrowed {
		t.count(LeadLimits)
	}
	if e := a.Add(uint32(w) << f.cliShift()); f.leadEdge.LessThan(e) {
		f.leadEdge = e
	}
	return w
}

// windowOpened reports whether the live leg i, which has used more than
// half of the window it was offered, may now be offered more: a quarter of
// MaxLead more while the bound narrows its window, anything more once the
// client's own window is the limit. A receiver sends a window update once
// its window has opened usefully, not one per segment. After a takeover
// the bound is gone for good and leadEdge is in the old leg's space.
func (t *Table) windowOpened(f *Flow, i uint8) bool {
	if i != f.live || t.cfg.MaxLead <= 0 || !f.cli.hasAck || f.takenOver {
		return false
	}
	l := &f.legs[i]
	a := f.ackable(i)
	w, narrowed := t.offeredWindow(f, i, a)
	opened := a.Add(uint32(w) << f.cliShift()).Sub(f.leadEdge)
	step := int32(t.cfg.MaxLead / 4)
	if narrowed && opened < step || opened <= 0 {
		return false
	}
	return f.leadEdge.Sub(l.sndNxt) < 2*step
}

// leadHeld reports whether f's shadow holds the live leg back now: within
// the edge the bound allows, the live leg cannot send a full segment (or a
// quarter of the bound) more, and the client offers more.
func (t *Table) leadHeld(f *Flow) bool {
	if !t.leadBound(f) || !f.cli.hasAck {
		return false
	}
	live := &f.legs[f.live]
	edge, narrowed := t.offeredEdge(f, f.live, f.ackable(f.live))
	return narrowed && edge.Sub(live.sndNxt) < min(int32(live.opt.mss), int32(t.cfg.MaxLead/4))
}

// watchLead puts f in the queue of flows whose shadow holds the live leg
// back, once its live leg sent up to the bound.
func (t *Table) watchLead(f *Flow) {
	if f.leadDue == 0 && t.leadHeld(f) {
		f.leadDue = t.now + int64(t.cfg.LeadPause)
		t.leadQueue = append(t.leadQueue, f)
	}
}

// pauseLeads looks at the held flows that fell due. A shadow quiet for
// LeadPause lets the live leg go a quarter of the bound further: a backup
// whose server waits for the client's next segment before it reads again
// gets it, and the client waits no longer than a lost segment would have
// made it. A shadow quiet for LeadWait leaves the flow. A flow still held
// is looked at again a pause later. It reports whether out filled first.
func (t *Table) pauseLeads(now int64, out *Output) (more bool) {
	done := 0
	for _, f := range t.leadQueue {
		if f.leadDue > now {
			break
		}
		if !out.room(1) {
			more = true
			break
		}
		done++
		f.leadDue = 0
		if f.deleted || f.state == StateClosed || !t.leadHeld(f) {
			continue
		}
		switch quiet := now - f.shadowSeen; {
		case quiet > int64(t.cfg.LeadWait):
			t.shadowLost(f, other(f.live), "shadow_stalled")
			t.ackToServer(f, f.live, f.acking(f.live), out) // the client's window, now
			continue
		case quiet >= int64(t.cfg.LeadPause):
			f.leadGrace += uint32(t.cfg.MaxLead / 4)
			t.count(LeadGraces)
			t.ackToServer(f, f.live, f.acking(f.live), out)
		}
		// Appended at now+LeadPause, the queue stays in due order.
		f.leadDue = now + int64(t.cfg.LeadPause)
		t.leadQueue = append(t.leadQueue, f)
	}
	t.leadQueue = dropFront(t.leadQueue, done)
	return more
}

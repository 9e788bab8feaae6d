package tcpstate

import "understudy/rewrite"

// The lead bound keeps the two servers in lockstep on the reply side.
// Gating makes the client wait for the slower server's ack of its bytes,
// but nothing it sees waits for the shadow's reply: on a busy host the
// shadow falls behind by as many requests as the client's window lets it
// queue (a keep-alive client at full rate put a backup 130k requests behind
// in seconds), a takeover then stalls the client until the shadow has
// worked them all off, and the backlog starves the shadow's host until its
// health probes fail. So the live leg is offered a window that lets its
// stream run at most MaxLead bytes ahead of what the shadow has sent. The
// window offered never shrinks (RFC 9293 §3.8.6), and a shadow that sends
// nothing for LeadWait while it holds the live leg back leaves the flow.

// leadBound reports whether f's live leg is held to its shadow's pace. A
// flow that looks diverged is held too: a backup that lags by more than two
// blocks is compared by whole blocks, and one whose Date header ticked past
// the primary's differs in every block that holds one.
func (t *Table) leadBound(f *Flow) bool {
	return t.cfg.MaxLead > 0 && f.protectedPair() && f.legs[f.live].synAck &&
		f.legs[other(f.live)].synAck
}

// leadLimit is the right edge, in the live leg's space, the lead bound
// allows it: MaxLead past the shadow's last byte.
func (t *Table) leadLimit(f *Flow) rewrite.Seq {
	live, sh := &f.legs[f.live], &f.legs[other(f.live)]
	return live.at(sh.offset(sh.sndNxt) + uint32(t.cfg.MaxLead))
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

// windowTo returns the window field of a segment to leg i that acknowledges
// a (its space), and records what the live leg was offered.
func (t *Table) windowTo(f *Flow, i uint8, a rewrite.Seq) uint16 {
	if i != f.live {
		return f.cli.win
	}
	w := f.cli.win
	shift := f.cliShift()
	if edge, narrowed := t.offeredEdge(f, i, a); narrowed {
		w = 0
		if d := edge.Sub(a); d > 0 {
			w = uint16(uint32(d) >> shift)
			if a.Add(uint32(w) << shift).LessThan(f.leadEdge) {
				w++ // the field counts 1<<shift bytes: not below an edge offered before
			}
		}
		t.count(LeadLimits)
	}
	if e := a.Add(uint32(w) << shift); f.leadEdge.LessThan(e) {
		f.leadEdge = e
	}
	return w
}

// windowOpened reports whether the live leg i, which has used more than
// half of the window it was offered, may now be offered a quarter of
// MaxLead more: worth an ACK of its own, as a receiver sends a window
// update once its window has opened usefully, and not one per segment.
func (t *Table) windowOpened(f *Flow, i uint8) bool {
	if i != f.live || t.cfg.MaxLead <= 0 || !f.cli.hasAck {
		return false
	}
	l := &f.legs[i]
	edge, _ := t.offeredEdge(f, i, f.ackable(i))
	step := int32(t.cfg.MaxLead / 4)
	return edge.Sub(f.leadEdge) >= step && f.leadEdge.Sub(l.sndNxt) < 2*step
}

// leadStalled reports whether f's shadow holds the live leg back — the
// live leg cannot send a full segment more within what it was offered,
// and the client offers more — while it has sent nothing for LeadWait.
func (t *Table) leadStalled(now int64, f *Flow) bool {
	if !t.leadBound(f) || !f.cli.hasAck || now-f.shadowSeen <= int64(t.cfg.LeadWait) {
		return false
	}
	live := &f.legs[f.live]
	clientEdge := f.ackable(f.live).Add(uint32(f.cli.win) << f.cliShift())
	return f.leadEdge.Sub(live.sndNxt) < int32(live.opt.mss) && f.leadEdge.LessThan(clientEdge)
}

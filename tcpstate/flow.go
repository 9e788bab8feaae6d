package tcpstate

import "understudy/rewrite"

// Key identifies a client connection to a service.
type Key struct {
	Client [4]byte
	CPort  uint16
	VIP    [4]byte
	VPort  uint16
}

// State is a flow's place in its life.
type State uint8

const (
	StateSynSent     State = iota // client SYN sent to the servers
	StateEstablished              // client acknowledged the SYN-ACK
	StateClosing                  // a FIN has been seen
	StateTimeWait                 // both directions closed and acknowledged
	StateClosed                   // reset
	NumStates
)

var stateNames = [NumStates]string{"syn_sent", "established", "closing", "time_wait", "closed"}

func (s State) String() string { return stateNames[s] }

// Protection says whether a flow can survive the loss of its live server.
type Protection uint8

const (
	Protected   Protection = iota // both legs in lockstep
	Unprotected                   // one leg only
)

// endpoint options learned from a SYN or SYN-ACK.
type options struct {
	mss    uint16
	ws     uint8
	hasWS  bool
	sackOK bool
	hasTS  bool
}

func (o *options) read(p *rewrite.Packet) {
	o.mss, _ = p.MSS()
	if o.mss == 0 {
		o.mss = 536 // RFC 9293 default when the option is absent
	}
	o.ws, o.hasWS = p.WScale()
	if o.ws > 14 {
		o.ws = 14 // RFC 7323: larger shifts are treated as 14
	}
	o.sackOK = p.SACKPermitted()
	_, _, o.hasTS = p.Timestamps()
}

// leg is one server's side of a flow. Sequence numbers of the server's own
// stream are in that server's space; acks of client data are in the client's
// space, which both legs share.
type leg struct {
	server uint8 // index into Config.Servers
	up     bool  // still part of the flow
	synAck bool
	opt    options

	isn    rewrite.Seq
	synWin uint16
	synTS  uint32 // TSval of its SYN-ACK
	tsOff  uint32 // its TSval minus the client-visible leg's, at the SYN-ACKs
	tsLast uint32 // latest TSval it sent
	tsEcr  uint32 // latest TSecr it sent

	ack       rewrite.Seq // its cumulative ack of client data
	rightEdge rewrite.Seq // ack + scaled window, client space
	sndNxt    rewrite.Seq // highest seq+len it sent, own space
	acked     rewrite.Seq // highest ack it was sent, own space
	wndSent   uint16      // window field of the last ACK it was sent
	// resent: it sent a segment below what it was acknowledged (a
	// retransmission, a probe) since it was last sent an ACK: that ACK may
	// be lost, and the next one goes even if it says the same.
	resent bool

	fin    bool
	finSeq rewrite.Seq // own space
	rst    bool
	// cliFinHeld: the client's FIN has not been delivered because the leg
	// had not yet sent what the client had acknowledged. A server that reads
	// end-of-stream while still replying takes it for an aborted request.
	cliFinHeld bool
	// rstHeld: the client reset the flow before this shadow leg had sent
	// the reply the live leg sent (clientRST, drainShadow).
	rstHeld bool
	// asked: the client sent new data since the leg last answered
	// (noteAsked); its next reply byte past askOff is an answer, or past
	// askOwn, its own offset then, once the replies differ (noteAnswer).
	asked          bool
	askOff, askOwn uint32

	nsack int
	sack  [rewrite.MaxSACK][2]rewrite.Seq // its latest SACK blocks, client space
}

// advance takes from an acceptable segment of the leg how far it has sent
// and how far it has acknowledged the client's stream; it reports whether
// the leg sent anything new.
func (l *leg) advance(p *rewrite.Packet) (sent bool) {
	if end := p.Seq().Add(p.SegLen()); l.sndNxt.LessThan(end) {
		l.sndNxt, sent = end, true
	}
	if a := p.Ack(); p.Flags()&rewrite.ACK != 0 && l.ack.LessThan(a) {
		l.ack = a
	}
	return sent
}

// offset returns the stream offset of s in this leg's space.
func (l *leg) offset(s rewrite.Seq) uint32 { return uint32(s - l.isn - 1) }

// at returns the sequence number of stream offset off in this leg's space.
func (l *leg) at(off uint32) rewrite.Seq { return l.isn.Add(1 + off) }

// noteAsked records that the client sent new data: a leg not already
// waiting to answer earlier data answers this once it sends past askBase.
// A leg that is waiting keeps the older point, so a leg a whole reply
// behind is credited when it answers the earlier request.
func (f *Flow) noteAsked() {
	for i := range f.legs {
		l := &f.legs[i]
		if !l.up || !l.synAck || l.asked {
			continue
		}
		l.asked, l.askOff, l.askOwn = true, f.askBase(uint8(i)), l.offset(l.sndNxt)
	}
}

// askBase is the reply's stream offset past which leg i's bytes answer what
// the client sends now: the furthest of its own position, the other leg's
// and what the client was sent, so that a lagging leg's rest of an earlier
// reply (all a hung server's kernel still sends) is no answer. Once the
// replies differ the offsets no longer line up: noteAnswer then judges by
// the leg's own position (askOwn) instead.
func (f *Flow) askBase(i uint8) uint32 {
	l := &f.legs[i]
	off := l.offset(l.sndNxt)
	further := func(o uint32) {
		if int32(o-off) > 0 {
			off = o
		}
	}
	further(f.legs[f.vis].offset(f.nxtSent))
	if o := &f.legs[other(i)]; o.up && o.synAck {
		further(o.offset(o.sndNxt))
	}
	return off
}

// Flow is one client connection and its two server legs.
type Flow struct {
	key   Key
	state State
	prot  Protection
	why   string // why the flow is unprotected, for status

	created, seen int64 // monotonic ns
	closedAt      int64
	synAckDue     int64 // when to give up waiting for the backup's SYN-ACK; 0 = not waiting
	ackDue        int64 // when a held client ACK is sent to the legs; 0 = none held
	challenged    int64 // when the client was last sent a challenge ACK

	cli struct {
		opt    options
		isn    rewrite.Seq
		tsLast uint32
		nxt    rewrite.Seq // highest seq+len it sent
		ack    rewrite.Seq // latest ack, in the client-visible leg's space
		hasAck bool
		win    uint16 // latest raw window
		synWin uint16 // its SYN's window, for a SYN the gateway sends again
		fin    bool
		finSeq rewrite.Seq
	}

	legs [2]leg
	live uint8 // leg whose stream the client sees
	vis  uint8 // leg whose SYN-ACK the client saw: its sequence and timestamp spaces are the client's view

	synAckSent bool
	synTries   uint8 // SYNs sent to the backup again (Config.SynRetries)
	clientWS   uint8 // shift the client applies to windows it receives
	finSent    bool  // FIN released to the client
	deleted    bool
	ackSent    rewrite.Seq
	reSent     rewrite.Seq // right edge last announced to the client
	nxtSent    rewrite.Seq // highest seq+len sent to the client, live space
	tsSent     uint32      // highest TSval sent to the client

	cmp          *comparer   // the two reply streams compared; nil until data flows
	replay       replay      // the shadow leg's bytes the client has not acknowledged
	replayNext   uint32      // after a takeover: next stream offset to replay
	takenOver    bool        // the live leg switched servers
	kicks        uint8       // work owed after a takeover (kick* bits)
	ackLagNoted  bool        // the lag below (ackLagSince) was reported
	lastToClient int64       // when the client was last sent a frame
	stallFrom    int64       // after a takeover: when the client's wait began; 0 = not measured
	ackLagSince  int64       // since when the live leg acknowledges less than the shadow; 0 = it does not
	ackLagTarget rewrite.Seq // the shadow's ack when the lag began
	leadEdge     rewrite.Seq // right edge last offered to the live leg, its space (lead.go)
	shadowSeen   int64       // when the shadow leg last sent a new byte
	leadDue      int64       // when pauseLeads looks at the flow again; 0 = not queued
	leadGrace    uint32      // bytes past MaxLead a quiet shadow allowed the live leg

	resetByGateway bool // the gateway reset the client's connection
}

// Key returns the flow's identity.
func (f *Flow) Key() Key { return f.key }

// State returns where the flow is in its life.
func (f *Flow) State() State { return f.state }

// Protection returns whether both legs are still in lockstep.
func (f *Flow) Protection() Protection { return f.prot }

// Why says why the flow is unprotected ("" while protected).
func (f *Flow) Why() string { return f.why }

// other returns the index of the leg that is not i.
func other(i uint8) uint8 { return 1 - i }

// gated returns the ack and right edge the client may see: the minimum over
// the legs still in the flow, so a byte is acknowledged only once every leg
// holds it.
func (f *Flow) gated() (ack, re rewrite.Seq) {
	l, o := &f.legs[f.live], &f.legs[other(f.live)]
	if !l.up && o.up && o.synAck {
		// The live leg failed once both directions had closed (ServerDown):
		// the other acknowledges the client's last segments, its FIN too.
		return o.ack, o.rightEdge
	}
	ack, re = l.ack, l.rightEdge
	if o.up && o.synAck {
		ack = rewrite.SeqMin(ack, o.ack)
		re = rewrite.SeqMin(re, o.rightEdge)
	}
	return ack, re
}

// window converts a right edge into the window field the client reads.
func (f *Flow) window(ack, re rewrite.Seq) uint16 {
	d := re.Sub(ack)
	if d <= 0 {
		return 0
	}
	w := uint32(d) >> f.clientWS
	if w > 0xffff {
		w = 0xffff
	}
	return uint16(w)
}

// protectedPair reports whether the backup leg still shadows the live one.
func (f *Flow) protectedPair() bool {
	o := &f.legs[other(f.live)]
	return f.prot == Protected && o.up
}

// BytesFromClient counts the client's stream bytes the gateway has seen: its
// SYN and FIN take sequence space but carry no bytes.
func (f *Flow) BytesFromClient() uint64 {
	end := f.cli.nxt
	if f.cli.fin {
		end = f.cli.finSeq
	}
	start := f.cli.isn.Add(1)
	if end.LessThan(start) {
		return 0
	}
	return uint64(uint32(end - start)) // modulo 4 GiB, as sequence numbers are
}

// BytesToClient counts the stream bytes sent to the client, in the stream
// it sees (across a takeover too).
func (f *Flow) BytesToClient() uint64 {
	if !f.synAckSent {
		return 0
	}
	end := f.nxtSent
	if f.finSent {
		end = end.Add(^uint32(0)) // the FIN's sequence number carries no byte
	}
	start := f.legs[f.vis].isn.Add(1)
	if end.LessThan(start) {
		return 0
	}
	return uint64(uint32(end - start)) // modulo 4 GiB, as sequence numbers are
}

// Live returns the index (into Config.Servers) of the server whose stream the
// client sees.
func (f *Flow) Live() int { return int(f.legs[f.live].server) }

// Diverged reports whether the two servers' reply streams disagree at the
// most recently compared bytes.
func (f *Flow) Diverged() bool { return f.cmp.diverged() }

// Uses reports whether server (an index into Config.Servers) still carries
// a leg of the flow: a drained server is free once no open flow uses it.
func (f *Flow) Uses(server int) bool {
	if f.state == StateClosed || f.state == StateTimeWait {
		return false
	}
	for i := range f.legs {
		if l := &f.legs[i]; l.up && int(l.server) == server {
			return true
		}
	}
	return false
}

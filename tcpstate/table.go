// Package tcpstate is the gateway's flow table and its per-flow decisions:
// which segments reach which server, what the client may see, and what the
// gateway must say itself to keep both servers in lockstep. It is pure: the
// caller hands it parsed packets and a clock, and transmits what it emits.
package tcpstate

import (
	"math"
	"time"

	"understudy/rewrite"
)

// Service is one virtual address and port the gateway protects.
type Service struct {
	VIP  [4]byte
	Port uint16
}

// Config tunes the table. Zero durations and caps take the defaults.
type Config struct {
	Services []Service
	// Servers holds the primary's and the backup's real addresses.
	Servers [2][4]byte

	SynAckWait time.Duration // how long the client's SYN-ACK waits for the backup's (default 50ms)
	// SynRetries is how many times the client's SYN is sent to the backup
	// again, each time SynAckWait passes without its SYN-ACK, before the
	// flow goes on without the backup (default 2, at most 255; negative:
	// none). A lost SYN or SYN-ACK would otherwise cost the flow its
	// protection; the backup's own retransmission comes only after a second.
	SynRetries       int
	HandshakeTimeout time.Duration // half-open flows expire after this (default 10s)
	IdleTimeout      time.Duration // established flows with no traffic expire (default 10m)
	TimeWaitTimeout  time.Duration // closed flows linger to absorb retransmissions (default 30s)
	MaxFlows         int           // default 1<<20
	MaxHalfOpen      int           // default 1<<16
	// AckLag is how long the live leg may leave unacknowledged client
	// bytes the shadow has acknowledged before the flow reports it as
	// evidence against the live server (default 100ms).
	AckLag time.Duration
	// MaxResetsPerSecond bounds the resets sent for segments of unknown
	// connections (default 1000).
	MaxResetsPerSecond int
	ReplayPerFlow      int // bytes of the shadow's reply held per flow (default 8 MiB)
	ReplayBudget       int // bytes held over all flows (default 256 MiB)
	// AckHold is how long a client's pure ACK of everything the servers
	// sent may wait for the client's next segment, which carries the same
	// acknowledgement, before the gateway sends it to the servers itself
	// (default 200µs; negative: forward every ACK at once). See holdAck.
	AckHold time.Duration
	// MaxLead is how many bytes of reply the live server may send ahead of
	// what the backup has sent: the window it is offered is narrowed so (see
	// lead.go). It bounds the backup's backlog, and so a takeover's stall
	// (default 128 KiB; negative: no bound).
	MaxLead int
	// LeadPause is how long a backup that holds the live server back may
	// send nothing before the live server may go a quarter of MaxLead
	// further (default 200ms); LeadWait, before the flow goes on without
	// the backup (default 10s: the steps keep the client going meanwhile,
	// and a flow without its backup cannot survive the primary's loss).
	LeadPause, LeadWait time.Duration
}

// WithDefaults returns c with every unset field at its default.
func (c Config) WithDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.SynAckWait, 50*time.Millisecond)
	if c.SynRetries == 0 {
		c.SynRetries = 2
	}
	c.SynRetries = min(c.SynRetries, math.MaxUint8) // Flow.synTries counts them
	def(&c.HandshakeTimeout, 10*time.Second)
	def(&c.IdleTimeout, 10*time.Minute)
	def(&c.TimeWaitTimeout, 30*time.Second)
	if c.MaxFlows <= 0 {
		c.MaxFlows = 1 << 20
	}
	if c.MaxHalfOpen <= 0 {
		c.MaxHalfOpen = 1 << 16
	}
	def(&c.AckLag, 250*time.Millisecond) // beyond Linux's longest delayed ACK
	if c.MaxResetsPerSecond <= 0 {
		c.MaxResetsPerSecond = 1000
	}
	if c.ReplayPerFlow <= 0 {
		c.ReplayPerFlow = 8 << 20
	}
	if c.ReplayBudget <= 0 {
		c.ReplayBudget = 256 << 20
	}
	if c.AckHold == 0 {
		c.AckHold = 200 * time.Microsecond
	}
	if c.MaxLead == 0 {
		c.MaxLead = 128 << 10
	}
	c.MaxLead = min(c.MaxLead, 1<<30) // sequence arithmetic: far under 2^31
	def(&c.LeadPause, 200*time.Millisecond)
	def(&c.LeadWait, 10*time.Second)
	return c
}

const sweepEvery = int64(time.Second)

// Table holds every flow. It is not safe for concurrent use: the datapath
// owns it, and readers hold the datapath's lock.
type Table struct {
	cfg      Config
	flows    map[Key]*Flow
	halfOpen int
	Stats    Stats

	// roles for new flows: which server index each leg starts on; a
	// negative standby means new flows get no backup leg.
	active, standby int
	aloneWhy        string // why new flows are unprotected when standby < 0

	waiting []*Flow // flows whose SYN-ACK waits on the backup, in due order
	held    []*Flow // flows owing their legs a held client ACK, in due order
	// leadQueue holds flows whose shadow held the live leg back, in due
	// order (pauseLeads).
	leadQueue []*Flow
	// cuts holds flows whose drain a sweep cut off while the output was
	// full: their resets go first at the next Tick (finishCuts).
	cuts []*Flow
	// sackBuf holds shadowSACK's blocks: no allocation per segment.
	sackBuf [rewrite.MaxSACK][2]rewrite.Seq
	// synQueue holds flows in the order their SYNs came, from synHead on;
	// entries that left the handshake are skipped, and swept every second.
	synQueue  []*Flow
	synHead   int
	nextSweep int64

	now         int64 // the current call's clock
	kicked      []*Flow
	kickHead    int
	resetEpoch  int64 // start of the current second of reset budget
	resetsLeft  int
	last        FailoverRecord
	hasLast     bool
	freeChunks  []*chunk
	replayBytes int
	lastData    [2]int64 // when each server last sent application data
	lastAnswer  [2]int64 // when each server last answered a client's new data
	events      events
}

// LastData returns when server last sent application data (0: never): a
// server answering clients is alive, whatever a probe's timeout says.
func (t *Table) LastData(server int) int64 { return t.lastData[server] }

// LastAnswer returns when server last answered data a client sent (0:
// never): reply bytes past what either server had sent when the client
// spoke. A hung server's kernel still sends what its sockets hold, which
// LastData counts, but nothing it writes after the client's next request,
// so this tells a loaded server from a hung one.
func (t *Table) LastAnswer(server int) int64 { return t.lastAnswer[server] }

// New makes a table for cfg (defaults applied).
func New(cfg Config) *Table {
	cfg = cfg.WithDefaults()
	return &Table{cfg: cfg, flows: make(map[Key]*Flow), active: 0, standby: 1, aloneWhy: "no_standby", resetsLeft: cfg.MaxResetsPerSecond}
}

// Config returns the table's configuration with defaults applied.
func (t *Table) Config() Config { return t.cfg }

// Len returns the number of flows.
func (t *Table) Len() int { return len(t.flows) }

// HalfOpen returns the number of flows still in the handshake.
func (t *Table) HalfOpen() int { return t.halfOpen }

// Lookup returns the flow for k, or nil.
func (t *Table) Lookup(k Key) *Flow { return t.flows[k] }

// ForEach calls fn for every flow, for status and control; not the hot path.
func (t *Table) ForEach(fn func(*Flow)) {
	for _, f := range t.flows {
		fn(f)
	}
}

func (t *Table) drop(d Drop) { t.Stats.Drops[d]++ }

func (t *Table) count(c Counter) { t.Stats.Counters[c]++ }

func (t *Table) setState(f *Flow, s State, now int64) {
	if f.state == StateSynSent && s != StateSynSent {
		t.halfOpen--
	}
	f.state = s
	if s == StateTimeWait || s == StateClosed {
		f.closedAt = now
	}
}

func (t *Table) remove(f *Flow) {
	if f.state == StateSynSent {
		t.halfOpen--
	}
	delete(t.flows, f.key)
	f.deleted = true
	t.dropReplay(f)
}

func (t *Table) service(port uint16) ([4]byte, bool) {
	for _, s := range t.cfg.Services {
		if s.Port == port {
			return s.VIP, true
		}
	}
	return [4]byte{}, false
}

func (t *Table) serverIndex(ip [4]byte) int {
	for i, s := range t.cfg.Servers {
		if s == ip {
			return i
		}
	}
	return -1
}

// HandleClient decides what becomes of a segment from a client to a VIP.
// p views a frame the caller owns; it may be rewritten in place and emitted.
func (t *Table) HandleClient(now int64, p *rewrite.Packet, out *Output) {
	t.now = now
	t.count(ClientSegments)
	key := Key{Client: p.SrcIP(), CPort: p.SrcPort(), VIP: p.DstIP(), VPort: p.DstPort()}
	flags := p.Flags()
	if badFlags(flags) {
		t.drop(DropBadFlags)
		return
	}
	if flags&rewrite.SYN != 0 && p.PayloadLen() > 0 {
		// Data on a SYN is a Fast Open attempt: one server might take it
		// and the other not. Its sender retries without data.
		t.drop(DropSynData)
		return
	}
	f := t.flows[key]
	if f != nil && flags&(rewrite.SYN|rewrite.ACK) == rewrite.SYN && p.Seq() != f.cli.isn {
		// A new connection reusing the 4-tuple is fine once the old one ended.
		if f.state != StateTimeWait && f.state != StateClosed {
			t.drop(DropStaleSyn)
			t.challengeAck(f, out)
			return
		}
		if t.draining(f, out) {
			// The old connection's backup is still sending what the
			// client's reset cut off, and must read every request its
			// primary answered first; the client sends its SYN again.
			t.drop(DropStaleSyn)
			return
		}
		t.remove(f)
		f = nil
	}
	if f != nil && flags&(rewrite.SYN|rewrite.ACK) == rewrite.SYN && f.state == StateClosed && !f.synAckSent {
		// The flow died in its handshake (its server failed): the client's
		// retried SYN starts afresh on the servers there are now.
		t.remove(f)
		f = nil
	}
	if f == nil {
		if flags&(rewrite.SYN|rewrite.ACK|rewrite.RST|rewrite.FIN) != rewrite.SYN {
			t.drop(DropNoFlow)
			t.resetUnknown(p, ClientSide, out)
			return
		}
		if f = t.newFlow(now, key, p); f == nil {
			return
		}
		t.forwardSyn(f, p, out)
		return
	}
	if f.state != StateClosed {
		// A closed flow's seen is its draining shadow's last progress
		// (drainShadow): what the client sends after its reset says
		// nothing of that, and would keep a stalled drain from its end.
		f.seen = now
	}
	switch {
	case flags&rewrite.SYN != 0:
		if flags&rewrite.ACK != 0 {
			t.drop(DropNotReady)
			return
		}
		if f.synAckSent && f.state == StateSynSent && out.room(1) {
			// The client lost our SYN-ACK. Answer it from the gateway:
			// after a takeover, the server whose SYN-ACK it was is gone.
			t.emitSynAck(f, out)
			return
		}
		t.forwardSyn(f, p, out) // a retransmitted SYN
		return
	case flags&rewrite.RST != 0:
		t.clientRST(now, f, p, out)
		return
	case f.state == StateClosed && f.resetByGateway && flags&rewrite.ACK != 0 && out.room(1):
		// The client did not take our reset (Linux wants it at exactly
		// rcv_nxt and answers others with a challenge ACK): this one is.
		t.segToClient(f, p.Ack(), rewrite.RST, nil, nil, out)
		return
	case !f.synAckSent || f.state == StateClosed:
		t.drop(DropNotReady)
		return
	}
	if d, ok := t.clientAcceptable(f, p); !ok {
		// Dropped before it changes anything: a blind segment must not move
		// the client's ack, timestamps or window the flow relies on.
		t.drop(d)
		return
	}
	c := &f.cli
	hadAck, prevAck, prevWin := c.hasAck, c.ack, c.win
	if val, _, ok := p.Timestamps(); ok && !rewrite.TSLess(val, c.tsLast) {
		c.tsLast = val
	}
	if end := p.Seq().Add(p.SegLen()); c.nxt.LessThan(end) {
		c.nxt = end
		if p.PayloadLen() > 0 {
			f.noteAsked()
		}
	}
	if flags&rewrite.ACK != 0 {
		if a := p.Ack(); !c.hasAck || c.ack.LessThan(a) {
			c.ack, c.hasAck = a, true
			if len(f.replay.chunks) > 0 || f.replay.broken {
				t.trimReplay(f, f.legs[f.vis].offset(a))
			}
		}
		c.win = p.Window()
		if f.state == StateSynSent && c.ack == f.legs[f.vis].isn.Add(1) {
			t.setState(f, StateEstablished, now)
		}
	}
	if flags&rewrite.FIN != 0 && !c.fin {
		c.fin, c.finSeq = true, p.Seq().Add(uint32(p.PayloadLen()))
		if f.state == StateEstablished {
			t.setState(f, StateClosing, now)
		}
	}
	if hadAck && t.holdAck(f, p, prevAck, prevWin) {
		return
	}
	t.forwardToServers(f, p, out)
	if f.takenOver && int32(f.replay.end-f.replayNext) > 0 {
		// The client's window may have opened; the new leg's FIN follows
		// the replay's last byte (release).
		t.kick(f, kickReplay|kickRelease)
	}
	t.checkClosed(now, f)
}

// challengeAck answers a SYN with another ISN on a connection the client
// was shown as a server would (RFC 5961 §4): with an ACK of where the
// connection stands. A client that lost the connection (its host restarted,
// or a NAT gave its port to another) answers it with a reset at that ack,
// which ends the flow, and its next SYN opens a new one; without it, every
// SYN of that port is dropped until the flow idles out. A blind SYN's sender
// never sees the ACK, and the real client takes it for a duplicate. Within
// the per-second reset budget, as a server's are rate limited.
func (t *Table) challengeAck(f *Flow, out *Output) {
	if !f.synAckSent || f.challenged != 0 && t.now-f.challenged < challengeEvery || !out.room(1) || !t.resetBudget() {
		return
	}
	f.challenged = t.now
	t.segToClient(f, f.nxtSent, rewrite.ACK, nil, nil, out)
	t.count(ChallengeAcks)
}

// challengeEvery is the least time between two challenge ACKs of a flow, as
// Linux's tcp_invalid_ratelimit: a stream of blind SYNs draws two a second,
// not a stream of duplicate ACKs that would set off the client's fast
// retransmit.
const challengeEvery = int64(500 * time.Millisecond)

// draining reports whether a shadow of the closed flow f still drains
// towards the reset the client sent (drainShadow), having made progress
// within rstHoldMax. A drain that stalled is cut off here, with the reset it
// was owed, so that the flow can make way for the client's new connection.
func (t *Table) draining(f *Flow, out *Output) bool {
	return t.cutDrains(f, t.drainStalled(f), out)
}

// cutDrains sends each shadow of f still held from the client's reset its
// reset if cut, as far as out has room, and reports whether one is still
// held. A shadow that has sent as far as the live leg, but whose last
// segment met a full output, gets its reset cut or not, and is not counted
// as cut off.
func (t *Table) cutDrains(f *Flow, cut bool, out *Output) (held bool) {
	for i := range f.legs {
		l := &f.legs[i]
		if !l.up || !l.rstHeld {
			continue
		}
		lags := f.lagsReply(uint8(i))
		if lags && !cut || !out.room(1) {
			held = true
			continue
		}
		t.endDrain(f, uint8(i), lags, out)
	}
	return held
}

// finishCuts sends the resets of the drains a sweep cut off while out was
// full; it reports whether out filled again before it was done.
func (t *Table) finishCuts(out *Output) (more bool) {
	done := 0
	for _, f := range t.cuts {
		// A queued flow keeps its place until its resets are out; the
		// deleted test only guards a removal that would not wait.
		if !f.deleted && t.cutDrains(f, true, out) {
			more = true
			break
		}
		done++
	}
	t.cuts = dropFront(t.cuts, done)
	return more
}

// drainStalled reports whether the closed flow f's draining shadow has sent
// nothing new for rstHoldMax.
func (t *Table) drainStalled(f *Flow) bool { return t.now-f.seen > rstHoldMax }

// endDrain sends the draining shadow leg i the client's reset it was held
// back from; cut counts it as cut off short of the live leg's reply.
func (t *Table) endDrain(f *Flow, i uint8, cut bool, out *Output) {
	if cut {
		t.count(DrainCutoffs)
	}
	f.legs[i].rstHeld = false
	t.rstToServer(f, i, out)
}

func (t *Table) newFlow(now int64, key Key, p *rewrite.Packet) *Flow {
	if len(t.flows) >= t.cfg.MaxFlows {
		t.drop(DropFlowCap)
		return nil
	}
	if t.halfOpen >= t.cfg.MaxHalfOpen && !t.evictHalfOpen() {
		t.drop(DropHalfOpenCap)
		return nil
	}
	f := &Flow{key: key, state: StateSynSent, created: now, seen: now}
	f.cli.opt.read(p)
	f.cli.isn = p.Seq()
	f.cli.nxt = p.Seq().Add(1)
	f.cli.synWin = p.Window()
	if val, _, ok := p.Timestamps(); ok {
		f.cli.tsLast = val
	}
	f.legs[0].server, f.legs[0].up = uint8(t.active), true
	if t.standby >= 0 {
		f.legs[1].server, f.legs[1].up = uint8(t.standby), true
	} else {
		f.prot, f.why = Unprotected, t.aloneWhy
	}
	t.flows[key] = f
	t.halfOpen++
	t.synQueue = append(t.synQueue, f)
	t.count(FlowsCreated)
	return f
}

// evictAge is how long a half-open flow is safe from eviction: long enough
// for a client whose ACK or first request was lost (a flood fills the
// capture ring) to retransmit it a few times.
const evictAge = int64(3 * time.Second)

// evictHalfOpen makes room for a new SYN at the half-open cap by removing
// the oldest flow still in its handshake, if it has had evictAge to finish
// it. Under a SYN flood the table then turns its half-open slots over every
// evictAge instead of refusing every SYN until the flood's flows expire
// (HandshakeTimeout), so a new client's retried SYN finds room; and a client
// that got in keeps its flow while its handshake completes. The servers'
// half-open state for an evicted flow is cleared by the reset its next
// SYN-ACK gets.
func (t *Table) evictHalfOpen() bool {
	for t.synHead < len(t.synQueue) {
		f := t.synQueue[t.synHead]
		half := !f.deleted && f.state == StateSynSent
		if half && t.now-f.created < evictAge {
			return false
		}
		t.synQueue[t.synHead] = nil
		t.synHead++
		if half {
			t.remove(f)
			t.count(HalfOpenEvicted)
			return true
		}
	}
	return false
}

// compactSynQueue keeps only the flows still in their handshake.
func (t *Table) compactSynQueue() {
	n := 0
	for _, f := range t.synQueue[t.synHead:] {
		if !f.deleted && f.state == StateSynSent {
			t.synQueue[n] = f
			n++
		}
	}
	clear(t.synQueue[n:])
	t.synQueue, t.synHead = t.synQueue[:n], 0
}

// forwardSyn sends the client's SYN to every leg still in the flow. ECN is
// not offered to the servers: the two would have to agree with the client on
// it, and the gateway announces only what both can honour.
func (t *Table) forwardSyn(f *Flow, p *rewrite.Packet, out *Output) {
	if fl := p.Flags(); fl&(rewrite.ECE|rewrite.CWR) != 0 {
		p.SetFlags(fl &^ (rewrite.ECE | rewrite.CWR))
	}
	t.forwardToServers(f, p, out)
}

// forwardToServers emits p to each leg still in the flow: p itself,
// rewritten in place, to the client-visible leg (or the one left), and a
// copy taken before that, translated into its space, to the other. The
// visible leg's frame leaves first: on a veth link each frame sent carries
// its receiver's whole receive path before the next one leaves, and the
// client waits on this leg's reply.
func (t *Table) forwardToServers(f *Flow, p *rewrite.Packet, out *Output) {
	first, second := f.vis, other(f.vis)
	if !f.legs[first].up {
		first, second = second, first
	}
	if !f.legs[first].up {
		return
	}
	shadow := f.legs[second].up
	if shadow && (!out.room(2) || !p.CopyTo(out.buf(), &out.pkt)) {
		t.drop(DropOutputFull)
		shadow = false
	}
	if !out.room(1) {
		t.drop(DropOutputFull)
		return
	}
	t.toServer(f, first, p, out)
	if shadow {
		t.toServer(f, second, &out.pkt, out)
	}
}

// toServer rewrites a client segment for leg i and emits it.
func (t *Table) toServer(f *Flow, i uint8, q *rewrite.Packet, out *Output) {
	l := &f.legs[i]
	q.SetDstIP(t.cfg.Servers[l.server])
	flags := q.Flags()
	if flags&rewrite.ACK != 0 && l.synAck {
		a := f.toLeg(i, q.Ack())
		// Never acknowledge what the leg has not sent: Linux drops such a
		// segment whole. The missing part is acknowledged when it appears.
		clamped := l.sndNxt.LessThan(a)
		if clamped {
			a = l.sndNxt
			t.count(AcksClamped)
		}
		w := t.windowTo(f, i, a)
		if clamped && a == l.acked && w == l.wndSent && !l.resent && flags == rewrite.ACK &&
			q.PayloadLen() == 0 && q.NumSACK() == 0 {
			// Clamped to what the leg was told already, it says nothing
			// new: a repeat the gateway made up (one per client ACK while
			// the leg's frames wait behind them), which a sender without
			// SACK counts towards a fast retransmit. The client's own
			// repeats are never clamped, and go; so does this one once the
			// leg resent something, as the ACK it had may be lost.
			t.count(AcksRepeatSkipped)
			return
		}
		if a != q.Ack() {
			q.SetAck(a)
		}
		if w != q.Window() {
			q.SetWindow(w)
		}
		if !a.LessThan(l.acked) {
			// An older ack the leg ignores, window and all.
			l.acked, l.wndSent, l.resent = a, w, false
		}
	}
	if val, ecr, ok := q.Timestamps(); ok && flags&rewrite.ACK != 0 && l.synAck {
		e := ecr + l.tsOff
		if rewrite.TSLess(l.tsLast, e) {
			e = l.tsLast
		}
		if e != ecr {
			q.SetTimestamps(val, e)
		}
	}
	if n := q.NumSACK(); n > 0 {
		t.sackToLeg(f, i, q, n)
	}
	if flags&rewrite.FIN != 0 && l.synAck && f.lagging(i) {
		q.SetFlags(flags &^ rewrite.FIN)
		l.cliFinHeld = true
	}
	q.Finish()
	out.emitPacket(ServerSide, q)
	t.countToServer(l.server)
}

// countToServer counts a frame emitted toward server (an index into
// Config.Servers): after a takeover or while one is drained, a flow's leg 0
// may be the backup.
func (t *Table) countToServer(server uint8) {
	if server == 0 {
		t.count(ToPrimary)
	} else {
		t.count(ToBackup)
	}
}

// ackable is how far the gateway may acknowledge leg i's stream: what the
// client acknowledged of the stream it sees, but never beyond what the leg
// sent.
func (f *Flow) ackable(i uint8) rewrite.Seq {
	return rewrite.SeqMin(f.toLeg(i, f.cli.ack), f.legs[i].sndNxt)
}

// acking returns the ack for a segment the gateway sends leg i now, and
// records it as sent.
func (f *Flow) acking(i uint8) rewrite.Seq {
	l, a := &f.legs[i], f.ackable(i)
	if l.acked.LessThan(a) {
		l.acked = a
	}
	return a
}

// lagging reports whether leg i has not yet sent everything the client has
// acknowledged of the stream it sees.
func (f *Flow) lagging(i uint8) bool {
	return f.cli.hasAck && f.legs[i].sndNxt.LessThan(f.toLeg(i, f.cli.ack))
}

// deliverHeldFin sends leg i the client's FIN it held back, once the leg has
// caught up with what the client acknowledged.
func (t *Table) deliverHeldFin(f *Flow, i uint8, out *Output) {
	l := &f.legs[i]
	if !l.cliFinHeld || f.lagging(i) || !out.room(1) {
		return
	}
	l.cliFinHeld = false
	t.segToServer(f, i, f.cli.finSeq, f.acking(i), rewrite.ACK|rewrite.FIN, out)
}

// sackToLeg translates the client's SACK blocks into leg i's space, keeping
// only what the leg has sent.
func (t *Table) sackToLeg(f *Flow, i uint8, q *rewrite.Packet, n int) {
	if i == f.vis {
		return
	}
	l := &f.legs[i]
	kept := 0
	for j := 0; j < n; j++ {
		left, right := q.SACKBlock(j)
		left, right = f.toLeg(i, left), f.toLeg(i, right)
		if l.sndNxt.LessThan(right) {
			right = l.sndNxt
		}
		if !left.LessThan(right) {
			continue
		}
		q.SetSACKBlock(kept, left, right)
		kept++
	}
	if kept < n {
		q.TruncateSACK(kept)
	}
}

// toLeg maps a sequence number of the client-visible server stream into leg
// i's space: the same stream offset.
func (f *Flow) toLeg(i uint8, s rewrite.Seq) rewrite.Seq {
	if i == f.vis {
		return s
	}
	return f.legs[i].at(f.legs[f.vis].offset(s))
}

// fromLeg maps a sequence number of leg i's stream into the client's view.
func (f *Flow) fromLeg(i uint8, s rewrite.Seq) rewrite.Seq {
	if i == f.vis {
		return s
	}
	return f.legs[f.vis].at(f.legs[i].offset(s))
}

func (t *Table) clientRST(now int64, f *Flow, p *rewrite.Packet, out *Output) {
	if f.state == StateClosed {
		// The client's kernel answers segments still in flight after its
		// own reset; the servers have had one already.
		t.drop(DropFlowClosed)
		return
	}
	if f.state != StateSynSent && !t.clientRSTInWindow(f, p.Seq()) {
		t.drop(DropOffWindowRST)
		return
	}
	if o := other(f.live); f.protectedPair() && f.legs[o].synAck && f.lagsReply(o) {
		// The shadow has not yet sent the reply the live leg sent: it has
		// not read every request the live server answered, and a reset
		// now would discard them from its socket, leaving the two
		// servers' states apart. Its reset waits until it has sent as far
		// (drainShadow).
		f.legs[o].rstHeld = true
		if out.room(1) {
			t.toServer(f, f.live, p, out)
		}
		t.setState(f, StateClosed, now)
		return
	}
	t.forwardToServers(f, p, out)
	t.setState(f, StateClosed, now)
}

// lagsReply reports whether leg i has sent less of its reply than the live
// leg has. Once the flow is closed the live leg's stream no longer moves, so
// it is also how far a draining shadow must go.
func (f *Flow) lagsReply(i uint8) bool {
	l, live := &f.legs[i], &f.legs[f.live]
	return int32(live.offset(live.sndNxt)-l.offset(l.sndNxt)) > 0
}

// rstHoldMax bounds how long a shadow whose reset waits (clientRST) may go
// without sending more of its reply; its next segment after that is reset.
// A bound on progress, not on the whole wait: a backup that lags by many
// requests on many connections at once (the end of a load run) works through
// them for longer than a second, and every request it is cut off from is one
// the primary answered and it never will.
const rstHoldMax = int64(time.Second)

// drainShadow takes a segment of shadow leg i after the client reset the
// flow, while the shadow's reset waits for it to send the reply the live
// leg sent: the gateway acknowledges the shadow's data so it goes on, and
// resets it once it has sent as far, or once it has sent nothing new for
// rstHoldMax (f.seen marks its last progress).
func (t *Table) drainShadow(f *Flow, i uint8, p *rewrite.Packet, out *Output) {
	l := &f.legs[i]
	t.drop(DropFlowClosed)
	if p.Flags()&rewrite.RST != 0 {
		l.rstHeld = false
		return
	}
	if d, ok := t.serverAcceptable(f, i, p); !ok {
		t.drop(d) // a bogus segment must not pass for the end of the drain
		return
	}
	// Its ack of the client's last bytes may come only now, and the
	// gateway's ACKs and reset start at it: Linux drops a segment that
	// starts below what it last acknowledged, so a stale one would leave
	// the backup retransmitting, unacknowledged, until the bound cut it off.
	// What it sends answers requests the client made before its reset:
	// a backup draining a long queue of them is answering, not hung.
	t.noteAnswer(f, l, p)
	if l.advance(p) {
		f.seen = t.now
	}
	if !out.room(1) {
		return
	}
	if lags := f.lagsReply(i); !lags || t.drainStalled(f) {
		t.endDrain(f, i, lags, out)
		return
	}
	if p.SegLen() > 0 {
		l.acked = l.sndNxt
		t.ackToServer(f, i, l.acked, out)
	}
}

// clientRSTInWindow applies RFC 5961's check to the window the client was
// shown: from the gated ack (the client may answer a segment carrying it) to
// the furthest right edge any leg offers. A blind reset must land inside it.
func (t *Table) clientRSTInWindow(f *Flow, s rewrite.Seq) bool {
	first, last := f.clientWindow()
	return !s.LessThan(first) && !last.LessThan(s)
}

// clientWindow is the window the client was shown: from the lowest ack any
// leg or the gateway sent it to the furthest right edge any leg offers.
func (f *Flow) clientWindow() (first, last rewrite.Seq) {
	first, last = f.ackSent, f.reSent
	for i := range f.legs {
		if l := &f.legs[i]; l.up && l.synAck {
			first = rewrite.SeqMin(first, l.ack)
			last = rewrite.SeqMax(last, l.rightEdge)
		}
	}
	return first, last
}

// badFlags reports flag combinations no TCP endpoint sends: SYN with FIN or
// RST, and segments with none of SYN, ACK and RST (a FIN or data without an
// ACK). Linux drops them; forwarding them would only probe the servers.
func badFlags(flags uint8) bool {
	switch {
	case flags&rewrite.SYN != 0:
		return flags&(rewrite.FIN|rewrite.RST) != 0
	case flags&(rewrite.ACK|rewrite.RST) == 0:
		return true
	}
	return false
}

// clientAcceptable applies RFC 9293's acceptability tests (§3.10.7.4) to a
// segment of an established client, with what the gateway showed it: its
// bytes must reach into the window between the servers' acks (less one
// window, for late duplicates) and the furthest right edge offered, and its
// ack must not pass what the client was sent nor lag it by more than the
// client's window (RFC 5961 §5.2).
func (t *Table) clientAcceptable(f *Flow, p *rewrite.Packet) (Drop, bool) {
	c := &f.cli
	if p.Flags()&rewrite.ACK != 0 {
		a := p.Ack()
		if f.nxtSent.LessThan(a) {
			return DropAckUnsent, false
		}
		if c.hasAck && int32(a-c.ack) < -int32(maxWindow(f.cliShift())) {
			return DropOutOfWindow, false
		}
	}
	first, last := f.clientWindow()
	seq := p.Seq()
	if last.LessThan(seq) {
		return DropOutOfWindow, false
	}
	if end := seq.Add(p.SegLen()); int32(end-first) < -int32(maxWindow(f.clientWS)) {
		return DropOutOfWindow, false
	}
	return 0, true
}

// maxWindow is the largest window a 16-bit field scaled by shift can offer.
func maxWindow(shift uint8) uint32 { return uint32(0xffff) << min(shift, 14) }

// HandleServer decides what becomes of a segment from a server to a client.
func (t *Table) HandleServer(now int64, p *rewrite.Packet, out *Output) {
	t.now = now
	t.count(ServerSegments)
	s := t.serverIndex(p.SrcIP())
	vip, ok := t.service(p.SrcPort())
	if s < 0 || !ok {
		t.drop(DropUnknownServer)
		return
	}
	if p.PayloadLen() > 0 {
		t.lastData[s] = now
	}
	f := t.flows[Key{Client: p.DstIP(), CPort: p.DstPort(), VIP: vip, VPort: p.SrcPort()}]
	if f == nil {
		t.drop(DropNoFlow)
		t.resetUnknown(p, ServerSide, out)
		t.probeUnknownClient(p, vip, out)
		return
	}
	i := uint8(0)
	if f.legs[0].server != uint8(s) {
		i = 1
	}
	l := &f.legs[i]
	if l.server != uint8(s) || !l.up {
		// A server out of the flow that still sends missed its fencing
		// reset (its host was cut off) or holds an older connection on
		// the 4-tuple: left alone, it would meet the client's next SYN on
		// this port with that connection's ACK.
		t.drop(DropDeadLeg)
		t.resetUnknown(p, ServerSide, out)
		return
	}
	if f.state == StateClosed && l.rstHeld {
		t.drainShadow(f, i, p, out)
		return
	}
	if f.state == StateClosed {
		// The connection was reset. A server still sending (a backup that
		// lagged the client's reset) gets the answer the client's kernel
		// would give, never an ACK, and its own reset changes nothing.
		t.drop(DropFlowClosed)
		t.resetUnknown(p, ServerSide, out)
		return
	}
	f.seen = now
	flags := p.Flags()
	switch {
	case flags&rewrite.RST != 0:
		t.serverRST(now, f, i, p, out)
		return
	case flags&rewrite.SYN != 0:
		if flags&rewrite.ACK == 0 || p.Ack() != f.cli.isn.Add(1) {
			t.drop(DropBadSynAck)
			return
		}
		t.synAck(now, f, i, p, out)
		return
	case !l.synAck:
		// An ACK rather than a SYN-ACK: the server still holds an older
		// connection on the 4-tuple, one whose end it never learned (its
		// host was cut off while the gateway fenced it, or the gateway
		// restarted), and the client reuses the port. The client's kernel
		// would answer it with a reset at its ack (RFC 9293 §3.10.7.3),
		// freeing the port, and its next SYN would be answered; the ACK
		// never reaches it, so the gateway sends that reset — the one a
		// segment of an unknown connection gets, within the same budget —
		// and the SYN again at once. Without it every retried SYN met the
		// old connection until the client gave up.
		if flags&rewrite.ACK != 0 && out.room(2) && t.resetUnknown(p, ServerSide, out) {
			t.count(StaleConnsReset)
			t.synToServer(f, i, out)
			return
		}
		t.drop(DropNotReady)
		return
	}
	if d, ok := t.serverAcceptable(f, i, p); !ok {
		// Before it moves the leg's numbers: one bogus segment far ahead
		// would make the leg look ahead of the live one (a premature FIN,
		// a takeover) and make the gateway acknowledge what it never sent.
		t.drop(d)
		return
	}
	prevAck, prevRE := l.ack, l.rightEdge
	if p.Seq().LessThan(l.acked) {
		l.resent = true
	}
	prevNxt := l.sndNxt
	if val, ecr, ok := p.Timestamps(); ok {
		if !rewrite.TSLess(val, l.tsLast) {
			l.tsLast = val
		}
		l.tsEcr = ecr
	}
	t.noteAnswer(f, l, p)
	if l.advance(p) && i != f.live {
		f.shadowSeen, f.leadGrace = now, 0
		if t.windowOpened(f, f.live) {
			t.kick(f, kickAck0<<f.live) // the lead bound let go of the live leg
		}
	}
	if a := p.Ack(); flags&rewrite.ACK != 0 && a == l.ack {
		// max: a reordered older segment must not shrink the window.
		l.rightEdge = rewrite.SeqMax(l.rightEdge, a.Add(uint32(p.Window())<<f.shift(l)))
	}
	l.nsack = p.NumSACK()
	for j := 0; j < l.nsack; j++ {
		l.sack[j][0], l.sack[j][1] = p.SACKBlock(j)
	}
	if flags&rewrite.FIN != 0 && !l.fin {
		l.fin, l.finSeq = true, p.Seq().Add(uint32(p.PayloadLen()))
		if f.state == StateEstablished {
			t.setState(f, StateClosing, now)
		}
	}
	if n := p.PayloadLen(); n > 0 && (f.protectedPair() || f.takenOver) {
		off := l.offset(p.Seq())
		t.compareReply(f, i, off, p.Payload())
		if i != f.live && f.protectedPair() {
			t.bufferReply(f, off, p.Payload())
		}
	}
	t.deliverHeldFin(f, i, out)
	news := prevAck != l.ack || prevRE != l.rightEdge
	splice := spliceGo
	if i == f.live && f.takenOver {
		splice = f.spliceCheck(l, p, prevNxt)
	}
	switch {
	case splice == spliceReset:
		t.resetDiverged(f, l.server)
	case splice == spliceHold:
		// The client is not given this leg's copy of bytes it has. What
		// the segment acknowledges goes on as a pure ACK, and the gateway
		// acknowledges the bytes to the leg: the client, not shown them,
		// will not, and the leg would stall on its congestion window,
		// resending into the hold.
		t.count(HeldBelowSplice)
		t.kick(f, kickRelease|kickAck0<<i)
	case i == f.live:
		t.checkAckLag(f)
		t.toClient(f, p, news, out)
		t.watchLead(f)
	default:
		t.absorb(f, i, p, prevAck, prevRE, out)
	}
	t.checkClosed(now, f)
}

// What a segment of the new live leg after a takeover may do (spliceCheck).
const (
	spliceGo    = iota // on to the client
	spliceHold         // kept from the client, which has these bytes
	spliceReset        // the flow cannot go on with this leg's reply
)

// spliceCheck judges segment p of the live leg l after a takeover, against
// the client's copy of the old leg's reply up to the splice; prevNxt is the
// leg's sndNxt before p. A clean reset, never a spliced reply:
//   - a leg that closes short of the splice, where the client has bytes it
//     never sent;
//   - one that passes the splice, or closes at it, while the last
//     comparison differed;
//   - one that resends bytes the client still lacks while the comparison
//     differs (the old leg's copy was lost on its way; any ACK the client
//     delayed has come by the leg's retransmission timeout): held, they
//     would be resent into the hold for good.
//
// Other bytes below the splice are held while the comparison differs: the
// client has them, and this copy may not be the one it had coming.
func (f *Flow) spliceCheck(l *leg, p *rewrite.Packet, prevNxt rewrite.Seq) int {
	if f.cmp == nil {
		return spliceGo
	}
	end := p.Seq().Add(p.SegLen())
	switch {
	case p.Flags()&rewrite.FIN != 0 && int32(l.offset(l.finSeq)-f.cmp.splice) < 0:
		return spliceReset
	case !f.cmp.diverged():
		return spliceGo
	case int32(l.offset(end)-f.cmp.splice) > 0:
		return spliceReset
	case p.PayloadLen() == 0:
		return spliceGo
	case !prevNxt.LessThan(end) && f.cli.hasAck && int32(l.offset(end)-f.legs[f.vis].offset(f.cli.ack)) > 0:
		return spliceReset
	}
	return spliceHold
}

// resetDiverged resets f, whose new live leg (server) would splice another
// reply onto the client's.
func (t *Table) resetDiverged(f *Flow, server uint8) {
	t.count(Divergences)
	t.note(f, EventReset, "diverged", server)
	t.resetFlow(f)
}

// serverAcceptable applies RFC 9293's acceptability tests to a segment of
// leg i: its bytes must lie within one maximal client window of what the
// leg was last acknowledged (it cannot send beyond the window, and
// retransmits no further back), and its ack must not pass what the client
// has sent.
func (t *Table) serverAcceptable(f *Flow, i uint8, p *rewrite.Packet) (Drop, bool) {
	l := &f.legs[i]
	if p.Flags()&rewrite.ACK != 0 && f.cli.nxt.LessThan(p.Ack()) {
		return DropAckUnsent, false
	}
	win := int32(maxWindow(f.cliShift()))
	if int32(p.Seq()-l.acked) > win || int32(p.Seq().Add(p.SegLen())-l.acked) < -win {
		return DropOutOfWindow, false
	}
	return 0, true
}

// compareReply feeds leg i's reply bytes to the flow's comparer.
func (t *Table) compareReply(f *Flow, i uint8, off uint32, data []byte) {
	if f.cmp == nil {
		f.cmp = new(comparer)
	}
	rec := f.cmp.recovered
	if f.cmp.ahead(i, off) && f.cmp.resync(i, off, f.legs[i].offset(f.legs[i].acked)) {
		t.count(CompareResyncs)
	}
	n, ok := f.cmp.feed(i, off, data)
	t.Stats.Counters[BlocksCompared] += uint64(n)
	t.Stats.Counters[BlocksDiffered] += uint64(n - ok)
	t.Stats.Counters[Substitutions] += uint64(f.cmp.recovered - rec)
}

// shift is the window scale a leg applies to the windows it sends.
func (f *Flow) shift(l *leg) uint8 {
	if l.opt.hasWS && f.cli.opt.hasWS {
		return l.opt.ws
	}
	return 0
}

// toClient rewrites a segment of the live leg for the client: source back to
// the VIP, ack and window gated by every leg, SACK limited to what every leg
// holds, and a FIN only once every leg has closed at the same offset.
func (t *Table) toClient(f *Flow, p *rewrite.Packet, news bool, out *Output) {
	l := &f.legs[f.live]
	flags := p.Flags()
	ack, re := f.gated()
	finHeld := false
	if flags&rewrite.FIN != 0 && !f.finSent && f.protectedPair() {
		if t.finDisagree(f) {
			if !l.up {
				// This leg was taken over; the new live leg's stream goes on
				// and the replay covers the bytes of this segment.
				return
			}
			ack, re = f.gated() // the shadow left: this leg goes on alone
		} else if !f.legs[other(f.live)].fin {
			flags &^= rewrite.FIN
			p.SetFlags(flags)
			finHeld = true
		}
	}
	pure := p.PayloadLen() == 0 && flags&(rewrite.SYN|rewrite.FIN|rewrite.RST) == 0
	if pure && (news || finHeld) && ack == f.ackSent && !f.showsNew(ack, re) {
		// The live leg moved, or sent a FIN held back, but gating hides it:
		// forwarding would show the client a duplicate ACK it could take
		// for loss. (A live leg's own repeat, no news, is its loss signal
		// and goes.)
		t.count(AcksSuppressed)
		return
	}
	if !out.room(1) {
		t.drop(DropOutputFull)
		return
	}
	p.SetSrcIP(f.key.VIP)
	if f.live != f.vis {
		p.SetSeq(f.fromLeg(f.live, p.Seq()))
	}
	if flags&rewrite.ACK != 0 {
		p.SetAck(ack)
		p.SetWindow(f.window(ack, re))
		f.noteSent(ack, re)
	}
	if val, ecr, ok := p.Timestamps(); ok {
		if v := f.clientTS(l, val); v != val {
			p.SetTimestamps(v, ecr)
		}
	}
	if n := p.NumSACK(); n > 0 {
		t.sackToClient(f, p, n)
	}
	// p's seq is in the client's space by now: translated above, if at all.
	if end := p.Seq().Add(p.SegLen()); f.nxtSent.LessThan(end) {
		f.nxtSent = end
	}
	if flags&rewrite.FIN != 0 {
		f.finSent = true
	}
	p.Finish()
	out.emitPacket(ClientSide, p)
	t.noteStall(f)
	t.count(ToClient)
}

// noteAnswer records when leg l's segment p answers data the client sent
// (Flow.noteAsked). Once the replies differ the legs' offsets no longer
// line up, and the leg is judged by its own position when asked.
func (t *Table) noteAnswer(f *Flow, l *leg, p *rewrite.Packet) {
	if !l.asked || p.PayloadLen() == 0 {
		return
	}
	base := l.askOff
	if f.cmp.diverged() {
		base = l.askOwn
	}
	if int32(l.offset(p.Seq().Add(uint32(p.PayloadLen())))-base) > 0 {
		l.asked = false
		t.lastAnswer[l.server] = t.now
	}
}

// noteSent records the ack and right edge the client was last shown.
func (f *Flow) noteSent(ack, re rewrite.Seq) {
	f.ackSent = ack
	f.reSent = f.shownEdge(ack, re)
}

// shownEdge is the right edge the client reads from ack and the window
// field for re: re rounded down to whole units of the window scale. Compared
// with re itself, a right edge that is not a whole number of units past the
// ack (the ack of one leg, the edge of the other) would always look new.
func (f *Flow) shownEdge(ack, re rewrite.Seq) rewrite.Seq {
	return ack.Add(uint32(f.window(ack, re)) << f.clientWS)
}

// showsNew reports whether an ACK of ack with the window for re would show
// the client more than it was last shown: a higher ack or right edge.
func (f *Flow) showsNew(ack, re rewrite.Seq) bool {
	return f.ackSent.LessThan(ack) || f.reSent.LessThan(f.shownEdge(ack, re))
}

// finDisagree settles a live leg's FIN that the shadow does not match. If
// the shadow has sent beyond it, the live leg closed early (its server
// crashed): the shadow takes over. If the shadow closed first, it is the one
// cut short and leaves the flow. Returns whether they disagreed.
func (t *Table) finDisagree(f *Flow) bool {
	l, oi := &f.legs[f.live], other(f.live)
	o := &f.legs[oi]
	if !l.fin || !f.protectedPair() {
		return false
	}
	finOff := l.offset(l.finSeq)
	sent := o.offset(o.sndNxt)
	if o.fin {
		sent = o.offset(o.finSeq)
	}
	switch d := int32(sent - finOff); {
	case d > 0:
		t.count(PrematureFins)
		t.takeover(f, f.live)
		return true
	case o.fin && d < 0:
		t.count(FinMismatches)
		t.shadowLost(f, oi, "fin_mismatch")
		return true
	}
	return false
}

// clientTS maps a TSval of leg l into the client-visible clock, never letting
// it go backwards (PAWS would drop the segment).
func (f *Flow) clientTS(l *leg, val uint32) uint32 {
	v := val - l.tsOff
	if rewrite.TSLess(v, f.tsSent) {
		v = f.tsSent
	}
	f.tsSent = v
	return v
}

// sackToClient keeps, of each SACK block of the live leg, only the part the
// other leg holds too, so the client never skips a byte a leg is missing.
func (t *Table) sackToClient(f *Flow, p *rewrite.Packet, n int) {
	if !f.protectedPair() {
		return
	}
	o := &f.legs[other(f.live)]
	kept := 0
	for j := 0; j < n; j++ {
		left, right := p.SACKBlock(j)
		r, ok := o.holds(left, right)
		if !ok {
			continue
		}
		p.SetSACKBlock(kept, left, r)
		kept++
	}
	if kept < n {
		p.TruncateSACK(kept)
	}
}

// holds returns how far from left, up to right, the leg is known to hold the
// client's bytes: below its cumulative ack or inside one of its SACK blocks.
func (l *leg) holds(left, right rewrite.Seq) (rewrite.Seq, bool) {
	if left.LessThan(l.ack) {
		return rewrite.SeqMin(right, l.ack), true
	}
	for k := 0; k < l.nsack; k++ {
		if !left.LessThan(l.sack[k][0]) && left.LessThan(l.sack[k][1]) {
			return rewrite.SeqMin(right, l.sack[k][1]), true
		}
	}
	return 0, false
}

// absorb consumes a segment of a leg the client does not see: it feeds the
// gating, and the gateway acknowledges the leg's data itself once the client
// has acknowledged the same offset of the live stream. That acknowledgement
// waits for the end of the batch (Flush): a shadow that lags the client has
// every segment acknowledgeable on arrival, and one ACK per batch instead of
// one per segment cuts the frames the gateway sends in a download by a
// third (its ACKs to the shadow fell from 619k to 130k for 556k segments).
func (t *Table) absorb(f *Flow, i uint8, p *rewrite.Packet, prevAck, prevRE rewrite.Seq, out *Output) {
	t.count(BackupAbsorbed)
	l := &f.legs[i]
	if f.cli.hasAck {
		a := f.ackable(i)
		switch {
		case l.acked.LessThan(a):
			// Less than two full segments owed waits like a held client
			// ACK, as a receiver's delayed ACK does (RFC 9293 §3.8.6.3):
			// the client's next segment usually says it.
			if t.cfg.AckHold < 0 || uint32(a-l.acked) >= 2*uint32(f.cli.opt.mss) {
				t.kick(f, kickAck0<<i)
			} else {
				t.holdAcks(f)
			}
		case p.SegLen() > 0 && p.Seq().Add(p.SegLen()).LessEq(l.acked) && out.room(1):
			// A retransmission of acknowledged bytes: our ACK was lost on
			// the way. Say it again, as a receiver does for duplicate data.
			t.ackToServer(f, i, l.acked, out)
		}
	}
	t.deliverHeldFin(f, i, out)
	t.checkAckLag(f)
	// A duplicate ACK (RFC 5681: no data, same ack, same window; with SACK,
	// whose receiver widens its window on out-of-order data, any window)
	// while the leg is behind the live one: a client segment lost on its way.
	dup := p.PayloadLen() == 0 && p.Flags()&(rewrite.FIN|rewrite.SYN) == 0 &&
		prevAck == l.ack && (prevRE == l.rightEdge || p.NumSACK() > 0) && l.ack.LessThan(f.legs[f.live].ack)
	t.release(f, dup, out)
}

// checkAckLag notices a live server that stopped acknowledging what the
// client sends while the shadow keeps up: a host gone silent, seen in the
// flow before the probes miss enough. The lag is measured against the
// shadow's ack when it began, so a live leg that is merely a moment behind
// on every segment never accumulates one. Reported once per lag.
func (t *Table) checkAckLag(f *Flow) {
	live, shadow := &f.legs[f.live], &f.legs[other(f.live)]
	if f.ackLagSince != 0 && !live.ack.LessThan(f.ackLagTarget) {
		f.ackLagSince, f.ackLagNoted = 0, false
	}
	if !f.protectedPair() || !live.ack.LessThan(shadow.ack) {
		return
	}
	switch {
	case f.ackLagSince == 0:
		f.ackLagSince, f.ackLagTarget = t.now, shadow.ack
	case !f.ackLagNoted && t.now-f.ackLagSince > int64(t.cfg.AckLag):
		f.ackLagNoted = true
		t.count(AckLags)
	}
}

// release tells the client what gating now allows: an ack or window the
// laggard leg has caught up with, a duplicate ACK that signals the laggard's
// loss, or a FIN both legs now agree on.
func (t *Table) release(f *Flow, dup bool, out *Output) {
	if !f.synAckSent {
		return
	}
	if t.finDisagree(f) {
		return
	}
	l := &f.legs[f.live]
	if l.fin && !f.finSent {
		o := &f.legs[other(f.live)]
		if !f.protectedPair() || o.fin {
			// Only a FIN the client has every byte before may be released.
			if f.nxtSent == f.fromLeg(f.live, l.finSeq) && out.room(1) {
				t.segToClient(f, f.nxtSent, rewrite.ACK|rewrite.FIN, nil, nil, out)
				f.finSent = true
				f.nxtSent = f.nxtSent.Add(1)
				return
			}
		}
	}
	ack, re := f.gated()
	if (dup || f.showsNew(ack, re)) && out.room(1) {
		var sack [][2]rewrite.Seq
		if dup {
			sack = t.shadowSACK(f)
		}
		t.segToClient(f, f.nxtSent, rewrite.ACK, nil, sack, out)
	}
}

// shadowSACK returns the blocks of the client's bytes that the shadow's
// latest SACK reports and the live leg holds too: what both servers have
// beyond the hole the shadow's duplicate ACK reports. A Linux client with
// SACK ignores a duplicate ACK that SACKs nothing; with the blocks it
// resends the hole at once, not after its retransmission timeout. Nil
// unless the client and both servers use SACK.
func (t *Table) shadowSACK(f *Flow) [][2]rewrite.Seq {
	live, sh := &f.legs[f.live], &f.legs[other(f.live)]
	if !f.cli.opt.sackOK || !live.opt.sackOK || !sh.opt.sackOK {
		return nil
	}
	ack, _ := f.gated()
	n := 0
	for k := 0; k < sh.nsack; k++ {
		// A block below the ack the client is sent would be a D-SACK: it
		// tells the client a retransmission was needless, of bytes the
		// primary may have needed it for.
		left := sh.sack[k][0]
		if left.LessThan(ack) {
			continue
		}
		if right, ok := live.holds(left, sh.sack[k][1]); ok && left.LessThan(right) {
			t.sackBuf[n] = [2]rewrite.Seq{left, right}
			n++
		}
	}
	return t.sackBuf[:n]
}

// segToClient builds a segment of the live leg's stream for the client,
// carrying payload (replayed bytes) or none, and SACK blocks if given.
func (t *Table) segToClient(f *Flow, seq rewrite.Seq, flags uint8, payload []byte, sack [][2]rewrite.Seq, out *Output) bool {
	l := &f.legs[f.live]
	ack, re := f.gated()
	s := rewrite.Spec{
		Src: f.key.VIP, Dst: f.key.Client, SrcPort: f.key.VPort, DstPort: f.key.CPort,
		Seq: seq, Ack: ack, Flags: flags, Window: f.window(ack, re), WScale: -1,
		HasTS: l.opt.hasTS && f.cli.opt.hasTS, Payload: payload, SACK: sack,
	}
	if s.HasTS {
		s.TSval, s.TSecr = f.clientTS(l, l.tsLast), f.cli.tsLast
	}
	b := out.buf()
	n := rewrite.Build(b, &s, &out.pkt)
	if n == 0 {
		t.drop(DropOutputFull) // the buffer cannot hold it: a sizing bug, never a crash
		return false
	}
	f.noteSent(ack, re)
	out.emit(ClientSide, b[:n])
	t.noteStall(f)
	t.count(ToClient)
	if len(payload) == 0 {
		t.count(SynthesizedACKs)
	}
	return true
}

// clientRcvNxt is the next sequence number the client expects, as far as
// the gateway knows: Linux takes a reset only at exactly that number.
func (f *Flow) clientRcvNxt() rewrite.Seq {
	if f.cli.hasAck {
		return f.cli.ack
	}
	return f.nxtSent
}

// ackOwed acknowledges what leg i sent that the client has acknowledged,
// unless a forwarded client ACK has said it since the debt arose. Once the
// client reset the flow only a shadow still draining (rstHeld) is owed one:
// left unpaid, it would wait for a loss probe to go on; the others were reset.
func (t *Table) ackOwed(f *Flow, i uint8, out *Output) {
	l := &f.legs[i]
	if !l.up || !l.synAck || !f.cli.hasAck || f.state == StateClosed && !l.rstHeld {
		return
	}
	if l.acked.LessThan(f.ackable(i)) || t.windowOpened(f, i) {
		t.ackToServer(f, i, f.acking(i), out)
	}
}

// holdAck decides whether the client's pure ACK p, which moved its ack on
// from prevAck, may wait instead of going to both servers now. An HTTP
// client's kernel acknowledges a response as its application reads it and
// then sends the next request, which carries the same ack, within
// microseconds: half the segments of a keep-alive client are such ACKs, and
// nearly all of them are said again by the next segment within a
// millisecond. A held ACK is sent by the gateway when AckHold passes (Tick)
// unless a forwarded segment said it first.
//
// Only an ACK that leaves every leg nothing in flight waits, so no server's
// congestion window waits on it, and only while each leg used at most half
// the window the client offered before it, so none waits on its window
// either. Neither a SACK (the loss signal) nor a duplicate or window-only
// ACK waits. What remains is a server that holds back a small write until
// its last one is acknowledged (Nagle's algorithm without TCP_NODELAY): its
// reply can be AckHold later.
func (t *Table) holdAck(f *Flow, p *rewrite.Packet, prevAck rewrite.Seq, prevWin uint16) bool {
	if t.cfg.AckHold < 0 || f.state != StateEstablished || f.takenOver ||
		p.Flags() != rewrite.ACK || p.PayloadLen() != 0 || p.NumSACK() != 0 ||
		!prevAck.LessThan(f.cli.ack) {
		return false
	}
	offered := int64(prevWin) << f.cliShift()
	for i := range f.legs {
		l := &f.legs[i]
		if !l.up {
			continue
		}
		if !l.synAck || l.fin || f.toLeg(uint8(i), f.cli.ack).LessThan(l.sndNxt) {
			return false
		}
		if inFlight := int64(int32(l.sndNxt - f.toLeg(uint8(i), prevAck))); 2*inFlight > offered {
			return false
		}
	}
	t.holdAcks(f)
	t.count(AcksHeld)
	return true
}

// holdAcks makes f's legs owed, within AckHold, what the client has
// acknowledged of their streams (sendHeldAcks), unless they are already.
func (t *Table) holdAcks(f *Flow) {
	if f.ackDue == 0 {
		f.ackDue = t.now + int64(t.cfg.AckHold)
		t.held = append(t.held, f)
	}
}

// sendHeldAcks sends the held client ACKs that fell due, to each leg that
// no later segment told; it reports whether out filled before it was done.
func (t *Table) sendHeldAcks(now int64, out *Output) (more bool) {
	done := 0
	for _, f := range t.held {
		if f.ackDue > now {
			break
		}
		if !out.room(2) {
			more = true
			break
		}
		done++
		f.ackDue = 0
		if f.deleted {
			continue
		}
		for i := uint8(0); i < 2; i++ {
			t.ackOwed(f, i, out)
		}
	}
	t.held = dropFront(t.held, done)
	return more
}

// dropFront removes q's first n flows, in place, keeping no pointers to
// them.
func dropFront(q []*Flow, n int) []*Flow {
	if n == 0 {
		return q
	}
	m := copy(q, q[n:])
	clear(q[m:])
	return q[:m]
}

// NextDue returns when the earliest held client ACK falls due (0: none is
// held): the caller's wait for frames should end by then.
func (t *Table) NextDue() int64 {
	if len(t.held) == 0 {
		return 0
	}
	return t.held[0].ackDue
}

// ackToServer builds a pure ACK for leg i acknowledging its stream up to a.
func (t *Table) ackToServer(f *Flow, i uint8, a rewrite.Seq, out *Output) {
	t.segToServer(f, i, f.legs[i].ack, a, rewrite.ACK, out)
}

// segToServer builds a segment of the client's stream for leg i.
func (t *Table) segToServer(f *Flow, i uint8, seq, a rewrite.Seq, flags uint8, out *Output) {
	l := &f.legs[i]
	s := rewrite.Spec{
		Src: f.key.Client, Dst: t.cfg.Servers[l.server], SrcPort: f.key.CPort, DstPort: f.key.VPort,
		Seq: seq, Ack: a, Flags: flags, Window: t.windowTo(f, i, a), WScale: -1,
		HasTS: l.opt.hasTS && f.cli.opt.hasTS, TSval: f.cli.tsLast, TSecr: l.tsLast,
	}
	l.wndSent, l.resent = s.Window, false
	b := out.buf()
	n := rewrite.Build(b, &s, &out.pkt)
	out.emit(ServerSide, b[:n])
	t.count(SynthesizedACKs)
	t.countToServer(l.server)
}

// synToServer sends the client's SYN to leg i again, rebuilt from what the
// flow kept of it. A server still in SYN-RECV answers a retransmitted SYN
// with its SYN-ACK again; one that never saw the SYN answers it afresh.
func (t *Table) synToServer(f *Flow, i uint8, out *Output) {
	c := &f.cli
	s := rewrite.Spec{
		Src: f.key.Client, Dst: t.cfg.Servers[f.legs[i].server], SrcPort: f.key.CPort, DstPort: f.key.VPort,
		Seq: c.isn, Flags: rewrite.SYN, Window: c.synWin, MSS: c.opt.mss, WScale: -1,
		SACKPermitted: c.opt.sackOK, HasTS: c.opt.hasTS, TSval: c.tsLast,
	}
	if c.opt.hasWS {
		s.WScale = int8(c.opt.ws)
	}
	b := out.buf()
	n := rewrite.Build(b, &s, &out.pkt)
	out.emit(ServerSide, b[:n])
	t.count(SynRetries)
	t.countToServer(f.legs[i].server)
}

// resetUnknown answers a segment of a connection the gateway does not know
// — it restarted, the flow expired, or the sender is no longer in the flow —
// with a reset, as a TCP endpoint does for a connection that does not exist
// (RFC 9293 §3.10.7.1), so that neither side hangs on it. The reply leaves
// by the side p came in on. Bounded per second: a flood of strays must not
// become a flood of resets. It reports whether a reset left.
func (t *Table) resetUnknown(p *rewrite.Packet, side Side, out *Output) (sent bool) {
	flags := p.Flags()
	if flags&rewrite.RST != 0 || !out.room(1) || !t.resetBudget() {
		return false
	}
	s := rewrite.Spec{Src: p.DstIP(), Dst: p.SrcIP(), SrcPort: p.DstPort(), DstPort: p.SrcPort(), WScale: -1}
	if flags&rewrite.ACK != 0 {
		s.Seq, s.Flags = p.Ack(), rewrite.RST
	} else {
		s.Ack, s.Flags = p.Seq().Add(p.SegLen()), rewrite.RST|rewrite.ACK
	}
	b := out.buf()
	n := rewrite.Build(b, &s, &out.pkt)
	out.emit(side, b[:n])
	t.count(UnknownResets)
	return true
}

// resetBudget takes one of the second's resets for unknown connections, if
// any is left.
func (t *Table) resetBudget() bool {
	if t.now-t.resetEpoch >= int64(time.Second) {
		t.resetEpoch, t.resetsLeft = t.now, t.cfg.MaxResetsPerSecond
	}
	if t.resetsLeft <= 0 {
		return false
	}
	t.resetsLeft--
	return true
}

// probeUnknownClient tells the client of a connection the gateway does not
// know, seen through its server's segment, that the connection is gone. A
// downloading client sends nothing until data comes, so after a gateway
// restart it would wait for ever; and a reset is taken only at exactly the
// client's next sequence number, which the server's segment does not carry.
// So the client gets a segment far below its window: Linux answers it with
// an ACK carrying its exact numbers (RFC 9293 §3.10.7.4), and that ACK, of
// an unknown connection too, gets the reset it takes.
//
// The probe carries one byte: Linux answers an unacceptable segment without
// data at most once per 500 ms per connection (tcp_invalid_ratelimit), and
// a client whose window was closed has just spent that on the servers' last
// zero-window probe, while the servers, reset here, send nothing more. Its
// ack lies 2^30 past the server's, beyond anything the client sent, so
// that a probe whose sequence number (the backup's, in a space the client
// never saw) fell inside the window by chance is discarded with its byte.
func (t *Table) probeUnknownClient(p *rewrite.Packet, vip [4]byte, out *Output) {
	if p.Flags()&rewrite.RST != 0 || !out.room(1) || !t.resetBudget() {
		return
	}
	s := rewrite.Spec{Src: vip, Dst: p.DstIP(), SrcPort: p.SrcPort(), DstPort: p.DstPort(),
		Seq: p.Seq() - 1<<30, Ack: p.Ack() + 1<<30, Flags: rewrite.ACK, Window: p.Window(), WScale: -1,
		Payload: probeByte[:]}
	b := out.buf()
	n := rewrite.Build(b, &s, &out.pkt)
	out.emit(ClientSide, b[:n])
	t.count(UnknownProbes)
}

// probeByte is the payload of probeUnknownClient's segments.
var probeByte = [1]byte{0}

// rstToServer clears leg i's state for this flow on its server.
func (t *Table) rstToServer(f *Flow, i uint8, out *Output) {
	l := &f.legs[i]
	seq := f.cli.isn.Add(1)
	if l.synAck {
		seq = l.ack
	}
	s := rewrite.Spec{
		Src: f.key.Client, Dst: t.cfg.Servers[l.server], SrcPort: f.key.CPort, DstPort: f.key.VPort,
		Seq: seq, Flags: rewrite.RST, WScale: -1,
	}
	b := out.buf()
	n := rewrite.Build(b, &s, &out.pkt)
	out.emit(ServerSide, b[:n])
}

func (t *Table) serverRST(now int64, f *Flow, i uint8, p *rewrite.Packet, out *Output) {
	l := &f.legs[i]
	if l.synAck && !t.serverRSTInWindow(f, i, p.Seq()) {
		t.drop(DropOffWindowRST)
		return
	}
	l.rst = true
	if i == f.live {
		if f.protectedPair() {
			// Never shown to the client while the shadow lives: the shadow
			// carries the connection on. Counted as a failure signal only
			// here: a server alone on a flow (drained, or its backup lost)
			// resets connections as servers do.
			t.count(PrimaryRSTs)
			t.drop(DropPrimaryRST)
			t.takeover(f, i)
			return
		}
		if !out.room(1) || !f.synAckSent {
			t.setState(f, StateClosed, now)
			return
		}
		p.SetSrcIP(f.key.VIP)
		p.SetSeq(f.fromLeg(i, p.Seq()))
		if p.Flags()&rewrite.ACK != 0 {
			p.SetAck(f.legs[i].ack)
		}
		p.Finish()
		out.emitPacket(ClientSide, p)
		t.count(ToClient)
		t.note(f, EventReset, "server_rst", l.server)
		t.setState(f, StateClosed, now)
		return
	}
	t.count(BackupRSTs)
	l.up = false
	if f.prot == Protected {
		f.prot, f.why = Unprotected, "backup_rst"
		t.count(FlowsUnprotected)
		t.note(f, EventUnprotected, "backup_rst", l.server)
	}
	if live := &f.legs[f.live]; live.rst && out.room(1) {
		// Both servers reset the connection: so may the client's.
		t.segToClient(f, f.clientRcvNxt(), rewrite.RST|rewrite.ACK, nil, nil, out)
		t.note(f, EventReset, "both_servers_rst", l.server)
		t.setState(f, StateClosed, now)
		return
	}
	t.maybeReleaseSynAck(now, f, out)
	t.release(f, false, out)
}

// serverRSTInWindow applies RFC 5961 to a server's reset: its sequence number
// must lie between what the gateway may acknowledge of the leg and what the
// client's window would accept after it, or within what the leg has sent. A
// leg behind the client is acknowledged only up to its own last byte, where
// its reset lands.
func (t *Table) serverRSTInWindow(f *Flow, i uint8, s rewrite.Seq) bool {
	l := &f.legs[i]
	next := l.isn.Add(1)
	if f.cli.hasAck {
		next = f.ackable(i)
	}
	win := uint32(f.cli.win) << f.cliShift()
	if win < 1 {
		win = 1
	}
	return s.InWindow(next, win) || next.LessEq(l.sndNxt) && s.InWindow(next, uint32(l.sndNxt.Sub(next))+1)
}

func (t *Table) synAck(now int64, f *Flow, i uint8, p *rewrite.Packet, out *Output) {
	l := &f.legs[i]
	if l.synAck {
		if p.Seq() != l.isn {
			t.drop(DropBadSynAck)
			return
		}
		// A retransmitted SYN-ACK: the client may have lost ours.
		if i == f.live && f.synAckSent && f.state == StateSynSent && out.room(1) {
			t.emitSynAck(f, out)
		}
		return
	}
	l.synAck = true
	l.isn = p.Seq()
	l.opt.read(p)
	l.synWin = p.Window()
	if val, ecr, ok := p.Timestamps(); ok {
		l.synTS, l.tsLast, l.tsEcr = val, val, ecr
	}
	l.ack = f.cli.isn.Add(1)
	l.rightEdge = l.ack.Add(uint32(l.synWin))
	l.sndNxt = l.isn.Add(1)
	l.acked = l.isn
	if i == f.live {
		f.leadEdge = l.sndNxt.Add(uint32(f.cli.synWin))
	} else {
		f.shadowSeen = now
	}
	t.maybeReleaseSynAck(now, f, out)
}

// maybeReleaseSynAck answers the client once the live leg's SYN-ACK is in and
// the other leg's too (or it is out of the flow): the client must not learn
// of the connection before both servers hold it.
func (t *Table) maybeReleaseSynAck(now int64, f *Flow, out *Output) {
	if f.synAckSent {
		return
	}
	v := &f.legs[f.live]
	if !v.synAck || !v.up {
		return
	}
	oi := other(f.live)
	o := &f.legs[oi]
	if o.up && !o.synAck {
		if f.synAckDue == 0 {
			f.synAckDue = now + int64(t.cfg.SynAckWait)
			t.waiting = append(t.waiting, f)
		}
		return
	}
	if o.up && (o.opt.hasTS != v.opt.hasTS || o.opt.hasWS != v.opt.hasWS) {
		// The client will use one set of options with both servers: a
		// disagreement on timestamps or scaling cannot be translated.
		t.count(OptionMismatches)
		t.shadowLost(f, oi, "option_mismatch")
	}
	if o.up {
		o.tsOff = o.synTS - v.synTS
	}
	f.vis = f.live
	f.clientWS = f.shift(v)
	if !out.room(1) {
		t.drop(DropOutputFull)
		return
	}
	t.emitSynAck(f, out)
}

// emitSynAck builds the client's SYN-ACK from the live leg's, announcing
// only what every leg can honour: the smaller MSS and window, SACK only if
// both agreed.
func (t *Table) emitSynAck(f *Flow, out *Output) {
	v := &f.legs[f.vis]
	o := &f.legs[other(f.vis)]
	s := rewrite.Spec{
		Src: f.key.VIP, Dst: f.key.Client, SrcPort: f.key.VPort, DstPort: f.key.CPort,
		Seq: v.isn, Ack: f.cli.isn.Add(1), Flags: rewrite.SYN | rewrite.ACK,
		Window: v.synWin, MSS: v.opt.mss, WScale: -1, SACKPermitted: v.opt.sackOK,
		HasTS: v.opt.hasTS, TSval: v.synTS, TSecr: v.tsEcr,
	}
	if v.opt.hasWS {
		s.WScale = int8(v.opt.ws)
	}
	if o.up && o.synAck {
		s.Window = min(s.Window, o.synWin)
		s.MSS = min(s.MSS, o.opt.mss)
		s.SACKPermitted = s.SACKPermitted && o.opt.sackOK
	}
	b := out.buf()
	n := rewrite.Build(b, &s, &out.pkt)
	out.emit(ClientSide, b[:n])
	t.count(ToClient)
	f.ackSent = s.Ack
	f.reSent = s.Ack.Add(uint32(s.Window))
	if !f.synAckSent {
		// Sent again for a client that lost it, the SYN-ACK carries its
		// first TSval: what the client was sent since must not go back.
		f.nxtSent = v.isn.Add(1)
		f.tsSent = v.synTS
	}
	f.synAckSent = true
}

// checkClosed moves a flow to TIME_WAIT once both directions are closed and
// acknowledged by everyone in it.
func (t *Table) checkClosed(now int64, f *Flow) {
	if f.state != StateClosing || !f.finSent || !f.cli.fin || !f.cli.hasAck {
		return
	}
	if f.cli.ack.LessThan(f.nxtSent) {
		return
	}
	for i := range f.legs {
		l := &f.legs[i]
		if l.up && l.ack.LessThan(f.cli.finSeq.Add(1)) {
			return
		}
	}
	t.setState(f, StateTimeWait, now)
}

// Flush does the work the segments of a batch deferred to its end: the
// coalesced acknowledgements of shadow legs, and what takeovers queued. The
// caller runs it after each batch of received frames, before transmitting.
// It reports whether it stopped early because out filled up; call again
// after sending.
func (t *Table) Flush(out *Output) (more bool) { return t.runKicks(out) }

// Tick runs the timers: SYN-ACKs that waited long enough for the backup,
// client ACKs held long enough (holdAck), and every second the expiry of
// idle, half-open and closed flows. It reports whether it stopped early
// because out filled up; call again after sending.
func (t *Table) Tick(now int64, out *Output) (more bool) {
	t.now = now
	if t.runKicks(out) {
		return true
	}
	defer func() {
		if !more {
			more = t.runKicks(out)
		}
	}()
	done := 0
	for _, f := range t.waiting {
		if f.synAckDue > now {
			break
		}
		if !out.room(2) {
			more = true
			break
		}
		done++
		if f.deleted || f.synAckSent || f.synAckDue == 0 {
			continue
		}
		f.synAckDue = 0
		if o := other(f.live); f.legs[o].up && !f.legs[o].synAck {
			if int(f.synTries) < t.cfg.SynRetries {
				f.synTries++
				t.synToServer(f, o, out)
				f.synAckDue = now + int64(t.cfg.SynAckWait)
				t.waiting = append(t.waiting, f)
				continue
			}
			t.count(SynAckTimeouts)
			t.shadowLost(f, o, "synack_timeout")
		}
		t.maybeReleaseSynAck(now, f, out)
	}
	t.waiting = dropFront(t.waiting, done)
	if more || t.sendHeldAcks(now, out) || t.pauseLeads(now, out) || t.finishCuts(out) {
		return true
	}
	if now >= t.nextSweep {
		t.nextSweep = now + sweepEvery
		t.sweep(now, out)
		more = len(t.cuts) > 0
	}
	return more
}

// sweep expires flows, and cuts off the drains of shadows gone silent: no
// segment of theirs comes to do it (draining), and a shadow left without
// its reset keeps the connection open on its server. A drain still going
// keeps its flow; it ends when the shadow has sent as far as the live leg.
func (t *Table) sweep(now int64, out *Output) {
	defer t.compactSynQueue()
	c := &t.cfg
	for _, f := range t.flows {
		var expired bool
		switch f.state {
		case StateSynSent:
			expired = now-f.created > int64(c.HandshakeTimeout)
		case StateTimeWait, StateClosed:
			// A drain still going keeps its flow, for one more time-wait at
			// most: a shadow that trickles its reply still ends.
			age, wait := now-f.closedAt, int64(c.TimeWaitTimeout)
			cut := t.drainStalled(f) || age > 2*wait
			if t.cutDrains(f, cut, out) {
				if cut {
					// out is full: the next Tick sends the rest
					// (finishCuts), and a later sweep removes the flow
					// once its time-wait is over.
					t.cuts = append(t.cuts, f)
				}
				continue
			}
			expired = age > wait
		default:
			expired = now-f.seen > int64(c.IdleTimeout)
		}
		if expired {
			t.remove(f)
			t.count(FlowsExpired)
		}
	}
}

package tcpstate

import (
	"fmt"
	"testing"
	"time"

	"understudy/rewrite"
)

// FuzzFlow drives one client connection through a table with a script of
// events decoded from the fuzz input: client, primary and backup segments
// built to be mostly plausible (cursors per side keep them near the window),
// clock advances, timer ticks, server failures and role changes. After
// every step it checks every emitted frame:
//
//   - it parses (with checksum verification), decodes with gopacket with
//     valid IPv4 and TCP checksums and fits a 1500-byte MTU;
//   - before the flow is taken over, every byte the client is sent is a byte
//     the flow's first server sent at that offset;
//   - no server is acknowledged (or SACKed) anything beyond what it sent;
//   - the client's TSvals never go backwards and no client-visible sequence
//     number ever carries two different bytes.
func FuzzFlow(f *testing.F) {
	for _, s := range flowSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		runFlowScript(t, data)
	})
}

// Script ops: the first byte of each step, modulo opCount; with its top bit
// set, the step does not end the datapath's batch (see flowRun.batched).
const (
	opClientSyn = iota
	opClientData
	opClientAck
	opClientFin
	opClientRst
	opSynAck
	opServerData
	opServerAck
	opServerFin
	opServerRst
	opClock
	opTick
	opServerDown
	opSetRoles
	opClientSack
	opServerSack
	opCount
)

const (
	maxSteps = 200
	maxTrack = 1 << 20 // stream offsets tracked per side
)

// isnChoices puts ISNs far from, near and across 2^32.
var isnChoices = []rewrite.Seq{1000, 0xFFFFFFF0, 0xFFFFFF00, 0x7FFFFFFF, 0x80000000, 3000000000, 12, 0xFFFFFFFF}

// script reads bytes of the fuzz input; past its end every read is zero.
type script struct {
	b []byte
	i int
}

func (s *script) byte() byte {
	if s.i >= len(s.b) {
		return 0
	}
	c := s.b[s.i]
	s.i++
	return c
}

func (s *script) done() bool { return s.i >= len(s.b) }

// stream records which bytes of a stream were sent, by offset from its ISN.
type stream struct {
	data []byte
	have []bool
}

func (s *stream) put(off uint32, b byte) (old byte, had bool) {
	if off >= maxTrack {
		return 0, false
	}
	for uint32(len(s.data)) <= off {
		s.data = append(s.data, 0)
		s.have = append(s.have, false)
	}
	old, had = s.data[off], s.have[off]
	s.data[off], s.have[off] = b, true
	return old, had
}

func (s *stream) get(off uint32) (byte, bool) {
	if off >= uint32(len(s.data)) {
		return 0, false
	}
	return s.data[off], s.have[off]
}

// replyByte is a server's reply byte at offset off: both servers send the
// same reply unless the script asks for a substitution.
func replyByte(off uint32) byte { return byte(off*7 + off>>8 + off>>16) }

// server is one scripted server.
type fuzzServer struct {
	ip       [4]byte
	isn      rewrite.Seq
	ts0      uint32
	synAcked bool
	hasTS    bool
	nxt      uint32 // next offset of its own stream to send
	sentEnd  rewrite.Seq
	est      bool        // acknowledged after its SYN-ACK: may send
	fin      bool        // sent a FIN
	cISN     rewrite.Seq // the client's ISN of its connection
	gotSyn   bool
	rcv      uint32
	rcvFin   bool
	tsRecent uint32
	sent     stream
}

type flowRun struct {
	t   *testing.T
	tab *Table
	out *Output
	now int64
	buf []byte
	pkt rewrite.Packet
	chk rewrite.Packet
	// the client
	cISN      rewrite.Seq
	cHasTS    bool
	cSynOpts  bool
	cNxt      uint32 // next offset of the client's stream
	cFin      bool
	cDead     bool        // reset by the gateway
	visISN    rewrite.Seq // from the SYN-ACK the client received
	gotSynAck bool
	rcvNxt    uint32 // client's next expected offset of the reply
	rcvFin    bool
	tsRecent  uint32
	seen      stream // what the client was sent, by client-visible offset
	tsMax     uint32
	tsAny     bool
	srv       [2]fuzzServer
	step      int
	events    []string
	// batched: the current step's segment leaves the batch open, so the
	// table's Flush waits for a later step, as under load.
	batched bool
}

// runFlowScript plays the script in data and returns the run, for its outcome.
func runFlowScript(t *testing.T, data []byte) *flowRun {
	sc := &script{b: data}
	r := &flowRun{
		t: t,
		tab: New(Config{
			Services: []Service{{VIP: vip, Port: vport}},
			Servers:  [2][4]byte{primaryIP, backupIP},
			// Small enough that a script's replies meet the lead bound.
			MaxLead: 1500,
		}),
		out: NewOutput(maxFrame + 64),
		buf: make([]byte, 2048),
		now: int64(time.Second),
	}
	h := sc.byte()
	r.cISN = isnChoices[h&7]
	r.srv[0] = fuzzServer{ip: primaryIP, isn: isnChoices[h>>3&7], ts0: pTS0}
	r.srv[1] = fuzzServer{ip: backupIP, isn: isnChoices[(h>>6|sc.byte()<<2)&7], ts0: bTS0}
	for i := range r.srv {
		r.srv[i].sentEnd = r.srv[i].isn
	}
	for r.step = 0; r.step < maxSteps && !sc.done(); r.step++ {
		r.doStep(sc)
	}
	r.batched = false
	r.flush()
	return r
}

func (r *flowRun) fail(format string, args ...any) {
	r.t.Helper()
	start := max(0, len(r.events)-60)
	r.t.Fatalf("step %d: %s\nlast events:\n  %s", r.step, fmt.Sprintf(format, args...), joinLines(r.events[start:]))
}

func joinLines(s []string) string {
	var out string
	for i, l := range s {
		if i > 0 {
			out += "\n  "
		}
		out += l
	}
	return out
}

func (r *flowRun) note(format string, args ...any) {
	r.events = append(r.events, fmt.Sprintf("%d: ", r.step)+fmt.Sprintf(format, args...))
}

func (r *flowRun) ms() uint32 { return uint32(r.now / int64(time.Millisecond)) }

func (r *flowRun) doStep(sc *script) {
	b := sc.byte()
	// The top bit of an op leaves the datapath's batch open after the
	// step, so what the table defers to the batch's end waits.
	op := b % opCount
	r.batched = b&0x80 != 0
	switch op {
	case opClientData, opClientAck, opClientFin, opClientSack:
		if !r.gotSynAck || r.cDead {
			// A client sends nothing but its SYN before the SYN-ACK, and
			// nothing at all once reset.
			r.note("client op %d skipped", op)
			return
		}
	}
	switch op {
	case opClientSyn:
		o := sc.byte()
		if r.cDead {
			// A new connection on the same 4-tuple: a new ISN.
			r.cDead, r.gotSynAck = false, false
			r.cISN += 100000
			r.cNxt, r.cFin = 0, false
			r.seen, r.rcvNxt, r.rcvFin, r.tsAny = stream{}, 0, false, false
		}
		s := r.clientSpec(r.cISN, 0, rewrite.SYN)
		if !r.cSynOpts {
			r.cHasTS = o&1 == 0
			r.cSynOpts = true
		}
		s.HasTS, s.TSval = r.cHasTS, cTS0+r.ms()
		if o&2 == 0 {
			s.MSS = 1460
		}
		if o&4 == 0 {
			s.WScale = int8(o >> 4 & 15)
		}
		s.SACKPermitted = o&8 == 0
		r.note("client SYN opts %#x", o)
		r.send(true, &s)
	case opClientData:
		n := r.length(sc.byte())
		d := sc.byte()
		off := r.cNxt
		if d&3 == 3 && r.cNxt > 0 { // a retransmission
			off = r.cNxt - min(r.cNxt, uint32(sc.byte())*8)
		}
		flags := uint8(rewrite.ACK | rewrite.PSH)
		if r.cFin { // after its FIN the client only retransmits
			off = min(off, r.cNxt)
			n = min(n, int(r.cNxt-off))
			if off+uint32(n) == r.cNxt {
				flags |= rewrite.FIN
			}
		}
		s := r.clientSpec(r.cISN.Add(1+off), r.clientAck(d>>2), flags)
		s.Payload = make([]byte, n)
		for i := range s.Payload {
			s.Payload[i] = byte(off + uint32(i))
		}
		if end := off + uint32(n); end > r.cNxt {
			r.cNxt = end
		}
		r.note("client data off %d len %d ack %d", off, n, s.Ack-r.visISN-1)
		r.send(true, &s)
	case opClientAck:
		d := sc.byte()
		s := r.clientSpec(r.cISN.Add(1+r.cNxt+b2u(r.cFin)), r.clientAck(d), rewrite.ACK)
		s.Window = r.window(sc.byte())
		r.note("client ACK %d win %d", s.Ack-r.visISN-1, s.Window)
		r.send(true, &s)
	case opClientFin:
		s := r.clientSpec(r.cISN.Add(1+r.cNxt), r.clientAck(0), rewrite.ACK|rewrite.FIN)
		r.cFin = true
		r.note("client FIN at %d", r.cNxt)
		r.send(true, &s)
	case opClientRst:
		d := sc.byte()
		seq := r.cISN.Add(1 + r.cNxt)
		if d&1 != 0 {
			seq += rewrite.Seq(uint32(d) << 20)
		}
		s := r.clientSpec(seq, 0, rewrite.RST)
		s.HasTS = false
		r.note("client RST seq+%d", seq-r.cISN-1)
		r.send(true, &s)
	case opSynAck:
		i, o := r.server(sc.byte())
		v := &r.srv[i]
		if !v.gotSyn {
			r.note("server %d SYN-ACK skipped: no SYN", i)
			return
		}
		s := r.serverSpec(i, v.isn, v.cISN.Add(1), rewrite.SYN|rewrite.ACK)
		if o&1 != 0 {
			s.MSS = 1400 - uint16(o&2)*30
		}
		if o&4 == 0 {
			s.WScale = int8(o >> 4 & 15)
		}
		s.SACKPermitted = o&8 == 0
		if !v.synAcked {
			v.hasTS = o&0x40 == 0 && r.cHasTS
		}
		s.HasTS = v.hasTS
		s.Window = 65535 - uint16(o&0x80)*100
		v.synAcked = true
		if end := v.isn.Add(1); v.sentEnd.LessThan(end) {
			v.sentEnd = end
		}
		r.note("server %d SYN-ACK opts %#x", i, o)
		r.send(false, &s)
	case opServerData:
		i, d := r.server(sc.byte())
		if !r.srv[i].est {
			r.note("server %d op skipped: not established", i)
			return
		}
		v := &r.srv[i]
		n := r.length(sc.byte())
		off := v.nxt
		var lag uint32 // ms the segment spent queued: an older TSval
		switch d & 3 {
		case 1: // retransmission
			off -= min(off, uint32(sc.byte())*16)
		case 2: // out of order: a gap before it, delayed on its way
			g := sc.byte()
			off += uint32(g) * 16
			lag = uint32(g & 15)
		}
		if v.fin { // after its FIN a server only retransmits, up to it
			off = min(off, v.nxt)
			n = min(n, int(v.nxt-off))
		}
		flags := uint8(rewrite.ACK | rewrite.PSH)
		// A FIN only on a segment that reaches the end of what it sent.
		if (d&4 != 0 || v.fin) && off+uint32(n) >= v.nxt {
			flags |= rewrite.FIN
		}
		s := r.serverSpec(i, v.isn.Add(1+off), r.serverAck(i, d>>3), flags)
		s.TSval -= lag
		s.Payload = make([]byte, n)
		subst := i == 1 && d&0x80 != 0
		for j := range s.Payload {
			b := replyByte(off + uint32(j))
			if subst && j < 16 {
				b ^= 0x55
			}
			s.Payload[j] = b
			v.sent.put(off+uint32(j), b)
		}
		r.serverSent(v, off+uint32(n), flags)
		r.note("server %d data off %d len %d fin %v subst %v", i, off, n, flags&rewrite.FIN != 0, subst)
		r.send(false, &s)
	case opServerAck:
		i, d := r.server(sc.byte())
		if !r.srv[i].est {
			r.note("server %d op skipped: not established", i)
			return
		}
		v := &r.srv[i]
		s := r.serverSpec(i, v.isn.Add(1+v.nxt+b2u(v.fin)), r.serverAck(i, d), rewrite.ACK)
		s.Window = r.window(sc.byte())
		r.note("server %d ACK %d win %d", i, s.Ack-v.cISN-1, s.Window)
		r.send(false, &s)
	case opServerFin:
		i, d := r.server(sc.byte())
		if !r.srv[i].est {
			r.note("server %d op skipped: not established", i)
			return
		}
		v := &r.srv[i]
		s := r.serverSpec(i, v.isn.Add(1+v.nxt), r.serverAck(i, d), rewrite.ACK|rewrite.FIN)
		r.serverSent(v, v.nxt, rewrite.FIN)
		r.note("server %d FIN at %d", i, v.nxt)
		r.send(false, &s)
	case opServerRst:
		i, d := r.server(sc.byte())
		v := &r.srv[i]
		seq := v.isn.Add(1 + v.nxt)
		if d&2 != 0 {
			seq += rewrite.Seq(uint32(d) << 20)
		}
		s := r.serverSpec(i, seq, 0, rewrite.RST)
		if d&4 != 0 {
			s.Flags |= rewrite.ACK
			s.Ack = v.cISN.Add(1 + v.rcv)
		}
		s.HasTS = false
		r.note("server %d RST off %d", i, seq-v.isn-1)
		r.send(false, &s)
	case opClock:
		d := sc.byte()
		step := time.Duration(d&31+1) * time.Millisecond
		for range d >> 5 {
			step *= 4
		}
		r.now += int64(step)
		r.note("clock +%v", step)
	case opTick:
		r.note("tick")
		r.tick()
	case opServerDown:
		s := int(sc.byte() & 1)
		r.note("server %d down", s)
		r.tab.ServerDown(r.now, s, "fuzz")
		r.tick()
	case opClientSack:
		// A client SACKs only what it holds beyond its cumulative ack.
		d := sc.byte()
		s := r.clientSpec(r.cISN.Add(1+r.cNxt+b2u(r.cFin)), r.clientAck(0), rewrite.ACK)
		var blocks [][2]rewrite.Seq
		for o := r.rcvNxt; o < uint32(len(r.seen.have)) && len(blocks) < 3; o++ {
			if !r.seen.have[o] {
				continue
			}
			e := o
			for e < uint32(len(r.seen.have)) && r.seen.have[e] {
				e++
			}
			if d&1 != 0 && e-o > 1 { // only part of it
				e -= (e - o) / 2
			}
			blocks = append(blocks, [2]rewrite.Seq{r.visISN.Add(1 + o), r.visISN.Add(1 + e)})
			d >>= 1
			o = e
		}
		if len(blocks) == 0 {
			r.note("client SACK skipped: nothing out of order")
			return
		}
		r.note("client SACK ack %d blocks %v", s.Ack-r.visISN-1, blocks)
		r.sendSACK(true, &s, blocks)
	case opServerSack:
		i, d := r.server(sc.byte())
		v := &r.srv[i]
		if !v.est {
			r.note("server %d op skipped: not established", i)
			return
		}
		s := r.serverSpec(i, v.isn.Add(1+v.nxt+b2u(v.fin)), r.serverAck(i, 0), rewrite.ACK)
		base := s.Ack.Add(uint32(d&7)*64 + 1)
		blocks := [][2]rewrite.Seq{{base, base.Add(uint32(d>>3+1) * 32)}}
		r.note("server %d SACK ack %d blocks %v", i, s.Ack-v.cISN-1, blocks)
		r.sendSACK(false, &s, blocks)
	case opSetRoles:
		d := sc.byte() & 3
		a, b := int(d&1), 1-int(d&1)
		if d&2 != 0 {
			b = -1
		}
		r.note("roles %d %d", a, b)
		r.tab.SetRoles(a, b)
	}
}

func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

// server picks a server from a script byte, returning the rest of its bits.
func (r *flowRun) server(d byte) (int, byte) { return int(d & 1), d >> 1 }

// length maps a script byte to a payload length, mostly small.
func (r *flowRun) length(d byte) int {
	switch {
	case d < 128:
		return int(d)
	case d < 240:
		return int(d-128) * 13
	default:
		return 1448
	}
}

func (r *flowRun) window(d byte) uint16 {
	if d == 0 {
		return 65535
	}
	return uint16(d) << 4
}

func (r *flowRun) clientSpec(seq, ack rewrite.Seq, flags uint8) rewrite.Spec {
	return rewrite.Spec{Src: clientIP, Dst: vip, SrcPort: cport, DstPort: vport, Seq: seq, Ack: ack,
		Flags: flags, Window: 1000, WScale: -1, HasTS: r.cHasTS, TSval: cTS0 + r.ms(), TSecr: r.tsRecent}
}

func (r *flowRun) serverSpec(i int, seq, ack rewrite.Seq, flags uint8) rewrite.Spec {
	v := &r.srv[i]
	return rewrite.Spec{Src: v.ip, Dst: clientIP, SrcPort: vport, DstPort: cport, Seq: seq, Ack: ack,
		Flags: flags, Window: 500, WScale: -1, HasTS: v.hasTS, TSval: v.ts0 + r.ms(), TSecr: v.tsRecent}
}

// clientAck is what the client acknowledges: mostly what it received.
func (r *flowRun) clientAck(d byte) rewrite.Seq {
	a := r.visISN.Add(1 + r.rcvNxt + b2u(r.rcvFin))
	switch d & 7 {
	case 5:
		a -= rewrite.Seq(d >> 3)
	case 6:
		a += rewrite.Seq(d >> 3) // beyond what it was sent
	}
	return a
}

// serverAck is what server i acknowledges of the client's stream.
func (r *flowRun) serverAck(i int, d byte) rewrite.Seq {
	v := &r.srv[i]
	a := v.cISN.Add(1 + v.rcv + b2u(v.rcvFin))
	if d&7 == 5 {
		a -= rewrite.Seq(d >> 3)
	}
	return a
}

func (r *flowRun) serverSent(v *fuzzServer, end uint32, flags uint8) {
	if end > v.nxt {
		v.nxt = end
	}
	e := v.isn.Add(1 + end)
	if flags&rewrite.FIN != 0 {
		v.fin = true
		e++
	}
	if v.sentEnd.LessThan(e) {
		v.sentEnd = e
	}
}

// send builds s and hands it to the table, then checks what came out.
func (r *flowRun) send(fromClient bool, s *rewrite.Spec) {
	n := rewrite.Build(r.buf, s, &r.pkt)
	if n == 0 {
		r.t.Fatalf("Build refused %+v", *s)
	}
	if res := r.pkt.Parse(r.buf[:n], false, true); res != rewrite.OK {
		r.t.Fatalf("script frame rejected: %v", res)
	}
	r.handle(fromClient)
}

func (r *flowRun) handle(fromClient bool) {
	r.out.Reset()
	if fromClient {
		r.tab.HandleClient(r.now, &r.pkt, r.out)
	} else {
		r.tab.HandleServer(r.now, &r.pkt, r.out)
	}
	r.check()
	if r.batched {
		return // the script ends the batch later (a flush step)
	}
	r.flush()
}

// sendSACK is send for a pure ACK carrying SACK blocks, which Build does
// not make: gopacket builds it.
func (r *flowRun) sendSACK(fromClient bool, s *rewrite.Spec, blocks [][2]rewrite.Seq) {
	n := copy(r.buf, sackFrame(r.t, s, blocks))
	if res := r.pkt.Parse(r.buf[:n], false, true); res != rewrite.OK {
		r.t.Fatalf("SACK frame rejected: %v", res)
	}
	r.handle(fromClient)
}

// flush ends the batch: the table does what it deferred to its end.
func (r *flowRun) flush() {
	for range 64 {
		r.out.Reset()
		more := r.tab.Flush(r.out)
		r.check()
		if !more {
			return
		}
	}
}

func (r *flowRun) tick() {
	for range 64 {
		r.out.Reset()
		more := r.tab.Tick(r.now, r.out)
		r.check()
		if !more {
			return
		}
	}
}

func (r *flowRun) flow() *Flow {
	return r.tab.Lookup(Key{Client: clientIP, CPort: cport, VIP: vip, VPort: vport})
}

// check verifies every frame of the last call and plays it to its receiver.
func (r *flowRun) check() {
	r.t.Helper()
	f := r.flow()
	before := f != nil && !f.takenOver
	for _, o := range r.out.Frames {
		fr := append([]byte(nil), o.Frame...)
		if res := r.chk.Parse(fr, false, true); res != rewrite.OK {
			r.fail("emitted frame fails Parse: %v", res)
		}
		sg := decode(r.t, o)
		if o.Side == ClientSide {
			r.toClient(sg, f, before)
		} else {
			r.toServer(sg)
		}
	}
}

func (r *flowRun) toClient(sg seg, f *Flow, before bool) {
	if [4]byte(sg.ip.DstIP.To4()) != clientIP || [4]byte(sg.ip.SrcIP.To4()) != vip {
		r.fail("client-side frame %v -> %v", sg.ip.SrcIP, sg.ip.DstIP)
	}
	seq := rewrite.Seq(sg.tcp.Seq)
	r.note("  -> client %s seq %d len %d", sg.flags(), seq-r.visISN-1, len(sg.payload))
	// A SYN-ACK is answered by a client still in SYN-SENT, which has no
	// timestamp to hold it to (a retransmitted one carries the original's).
	if v, _, ok := sg.ts(); ok && !sg.tcp.RST && !sg.tcp.SYN {
		if r.tsAny && rewrite.TSLess(v, r.tsMax) {
			r.fail("client TSval %d went back from %d", v, r.tsMax)
		}
		r.tsMax, r.tsAny, r.tsRecent = v, true, v
	}
	if sg.tcp.SYN {
		if r.gotSynAck && seq != r.visISN {
			// The flow expired in its handshake and the client's retried
			// SYN made a new one: the client, still in SYN-SENT, starts
			// over with this SYN-ACK.
			r.seen, r.rcvNxt, r.rcvFin, r.tsAny = stream{}, 0, false, false
		}
		r.visISN, r.gotSynAck = seq, true
		return
	}
	if sg.tcp.RST {
		r.cDead = true
		return
	}
	if !r.gotSynAck {
		return
	}
	off := uint32(seq - r.visISN - 1)
	for j, b := range sg.payload {
		o := off + uint32(j)
		if before && f != nil {
			p := &r.srv[f.legs[0].server]
			want, ok := p.sent.get(uint32(seq.Add(uint32(j)) - p.isn - 1))
			if !ok || want != b {
				r.fail("before any takeover the client got byte %#x at offset %d; the first server sent %#x (sent %v)", b, o, want, ok)
			}
		}
		if old, had := r.seen.put(o, b); had && old != b {
			r.fail("client-visible offset %d carried %#x, now %#x", o, old, b)
		}
	}
	for {
		if _, ok := r.seen.get(r.rcvNxt); !ok {
			break
		}
		r.rcvNxt++
	}
	if sg.tcp.FIN && uint32(seq.Add(uint32(len(sg.payload)))-r.visISN-1) == r.rcvNxt {
		r.rcvFin = true
	}
}

func (r *flowRun) toServer(sg seg) {
	if [4]byte(sg.ip.SrcIP.To4()) != clientIP {
		r.fail("server-side frame from %v", sg.ip.SrcIP)
	}
	var v *fuzzServer
	i := 0
	for j := range r.srv {
		if [4]byte(sg.ip.DstIP.To4()) == r.srv[j].ip {
			v, i = &r.srv[j], j
		}
	}
	if v == nil {
		r.fail("server-side frame to %v", sg.ip.DstIP)
	}
	ack := rewrite.Seq(sg.tcp.Ack)
	r.note("  -> server %d %s seq %d ack %d len %d", i, sg.flags(), rewrite.Seq(sg.tcp.Seq)-v.cISN-1, ack-v.isn-1, len(sg.payload))
	if sg.tcp.ACK {
		if !v.synAcked {
			r.fail("server %d sent an ACK (%d) before its SYN-ACK", i, ack)
		}
		if v.sentEnd.LessThan(ack) {
			r.fail("server %d acknowledged %d, beyond what it sent (%d)", i, ack-v.isn-1, v.sentEnd-v.isn-1)
		}
	}
	for _, bl := range sackBlocks(sg) {
		if !v.synAcked || v.sentEnd.LessThan(rewrite.Seq(bl[1])) {
			r.fail("server %d SACKed up to %d, beyond what it sent (%d)", i, rewrite.Seq(bl[1])-v.isn-1, v.sentEnd-v.isn-1)
		}
	}
	if val, _, ok := sg.ts(); ok {
		v.tsRecent = val
	}
	switch {
	case sg.tcp.RST:
		v.est = false
		return
	case sg.tcp.SYN:
		if !v.est && (v.nxt > 0 || v.fin || v.rcv > 0) || rewrite.Seq(sg.tcp.Seq) != v.cISN {
			// A new connection after a reset: it starts afresh.
			*v = fuzzServer{ip: v.ip, isn: v.isn, ts0: v.ts0, sentEnd: v.isn, tsRecent: v.tsRecent}
		}
		v.cISN, v.gotSyn = rewrite.Seq(sg.tcp.Seq), true
		return
	case sg.tcp.ACK && v.synAcked:
		v.est = true
	}
	off := uint32(rewrite.Seq(sg.tcp.Seq) - v.cISN - 1)
	if end := off + uint32(len(sg.payload)); off <= v.rcv && end > v.rcv && end-v.rcv < maxTrack {
		v.rcv = end
	}
	if sg.tcp.FIN && off+uint32(len(sg.payload)) == v.rcv {
		v.rcvFin = true
	}
}

// Seed scripts. Header: ISNs client 0xFFFFFFF0, primary 0xFFFFFF00, backup
// 0xFFFFFFFF (all about to wrap). Options byte 0x71: MSS, window scale 7,
// SACK, timestamps.
var (
	seedHandshake = []byte{opClientSyn, 0x70,
		opSynAck, 0x71 << 1, opClock, 2, opSynAck, 0x71<<1 | 1, opClientAck, 0, 0}
	seedRequest = []byte{opClientData, 18, 0,
		opServerAck, 0, 0, opServerAck, 1, 0}
	seedReply = []byte{
		opServerData, 1, 127, opServerData, 1, 200, opServerData, 0, 127, opClientAck, 0, 0,
		opServerData, 0, 200, opClientAck, 0, 0}
	seedClose = []byte{opServerFin, 0, opServerFin, 1, opClientFin, opServerAck, 0, 0, opServerAck, 1, 0,
		opClock, 0xE0, opTick}
	flowSeeds = [][]byte{
		// plain download
		cat([]byte{209, 1}, seedHandshake, seedRequest, seedReply, seedClose),
		// upload: the client sends, both servers acknowledge, then a short reply
		cat([]byte{0, 0}, seedHandshake,
			[]byte{opClientData, 250, 0, opClientData, 250, 0, opServerAck, 0, 0, opClientData, 250, 0,
				opServerAck, 1, 0, opServerAck, 0, 0, opServerAck, 1, 0, opClientFin,
				opServerData, 1, 10, opServerData, 0, 10, opClientAck, 0, 0},
			seedClose),
		// the primary fails mid-reply: the backup is ahead and takes over
		cat([]byte{209, 1}, seedHandshake, seedRequest,
			[]byte{opServerData, 1, 200, opServerData, 1, 200, opServerData, 1, 200,
				opServerData, 0, 200, opClientAck, 0, 0, opClock, 30, opServerDown, 0,
				opClientAck, 0, 0, opTick, opServerData, 1, 200, opClientAck, 0, 0},
			seedClose),
		// the primary resets mid-reply
		cat([]byte{0x5A, 0}, seedHandshake, seedRequest,
			[]byte{opServerData, 1, 200, opServerData, 1, 200, opServerData, 0, 200,
				opServerRst, 0, opTick, opClientAck, 0, 0, opServerData, 1, 20, opClientAck, 0, 0}),
		// the backup fails: the flow goes on unprotected
		cat([]byte{209, 1}, seedHandshake, seedRequest,
			[]byte{opServerData, 0, 127, opServerData, 1, 127, opClientAck, 0, 0,
				opServerDown, 1, opServerData, 0, 200, opClientAck, 0, 0, opSetRoles, 2},
			seedClose),
		// a reply reaches the client out of order: it SACKs, then the primary fails
		cat([]byte{209, 1}, seedHandshake, seedRequest,
			[]byte{opServerData, 1, 127, opServerData, 1, 127, opServerData, 1, 127, opServerData, 0, 127,
				opServerData, 4, 127, 8, opClientSack, 0, opServerSack, 0, opServerDown, 0, opClientAck, 0, 0, opTick}),
		// handshake failure: no backup SYN-ACK to the SYN or its two retries,
		// then the primary fails in the handshake
		[]byte{209, 1, opClientSyn, 0x70, opSynAck, 0x71 << 1, opClock, 60, opTick, opClock, 60, opTick, opClock, 60, opTick,
			opClientAck, 0, 0, opServerDown, 0, opClock, 0xE0, opClientSyn, 0x70, opSynAck, 0x71<<1 | 1, opTick},
		// the primary fails before its SYN-ACK reaches the client
		[]byte{0x13, 0, opClientSyn, 0x70, opSynAck, 0x71 << 1, opServerDown, 0, opTick,
			opSynAck, 0x71<<1 | 1, opClientAck, 0, 0, opClientData, 18, 0, opServerData, 1, 100, opClientAck, 0, 0},
		// the backup's SYN-ACK comes only after the SYN is sent to it again
		cat([]byte{209, 1}, []byte{opClientSyn, 0x70, opSynAck, 0x71 << 1, opClock, 60, opTick,
			opSynAck, 0x71<<1 | 1, opClientAck, 0, 0}, seedRequest, seedReply, seedClose),
	}
)

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// TestFlowSeeds: each seed reaches the outcome its script is for, so a change
// that turns a seed into a script of skipped steps cannot pass unnoticed.
func TestFlowSeeds(t *testing.T) {
	cases := []struct {
		name                       string
		fin                        bool // the client got the whole reply and its FIN
		takeovers, unprotected, rs uint64
	}{
		{name: "download", fin: true},
		{name: "upload", fin: true},
		{name: "primary fails mid-reply", fin: true, takeovers: 1},
		{name: "primary resets mid-reply", takeovers: 1},
		{name: "backup fails", fin: true, unprotected: 1},
		{name: "SACK then primary fails", takeovers: 1},
		{name: "no backup SYN-ACK, then the primary fails", unprotected: 1, rs: 1},
		{name: "primary fails before its SYN-ACK reaches the client", takeovers: 1},
		{name: "backup's SYN-ACK after a retried SYN", fin: true},
	}
	if len(cases) != len(flowSeeds) {
		t.Fatalf("%d outcomes for %d seeds", len(cases), len(flowSeeds))
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := runFlowScript(t, flowSeeds[i])
			c := r.tab.Stats.Counters
			if r.rcvFin != tc.fin || c[Takeovers] != tc.takeovers || c[FlowsUnprotected] != tc.unprotected || c[FlowsReset] != tc.rs {
				t.Errorf("fin %v, takeovers %d, unprotected %d, reset %d; want %v, %d, %d, %d",
					r.rcvFin, c[Takeovers], c[FlowsUnprotected], c[FlowsReset], tc.fin, tc.takeovers, tc.unprotected, tc.rs)
			}
			if tc.rs == 0 && r.rcvNxt == 0 {
				t.Error("the client was sent no reply")
			}
		})
	}
}

package tcpstate

import (
	"bytes"
	"slices"
	"testing"

	"understudy/rewrite"
)

// replyBytes is a reply of n bytes, not all alike.
func replyBytes(n int) []byte {
	r := make([]byte, n)
	for i := range r {
		r[i] = byte(i * 7)
	}
	return r
}

// midReply runs a handshake and a request, then the primary sends the
// first 1000 bytes of reply (which the client receives and acknowledges) and
// the backup sends the first sent bytes of the same reply.
func midReply(t *testing.T, tc struct {
	name             string
	cISN, pISN, bISN rewrite.Seq
}, reply []byte, sent int) *bed {
	t.Helper()
	b := newBed(t, tc.cISN, tc.pISN, tc.bISN)
	b.handshake()
	b.feed(true, b.fromClient(b.cISN+1, b.pISN+1, rewrite.ACK|rewrite.PSH, cTS0+2, pTS0), []byte("GET / HTTP/1.1\r\n\r\n"))
	req := rewrite.Seq(18)
	b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+1+req, rewrite.ACK, 125, bTS0+1, cTS0+2), nil)
	for off := 0; off < sent; off += 1000 {
		b.feed(false, b.fromServer(backupIP, b.bISN+1+rewrite.Seq(off), b.cISN+1+req, rewrite.ACK, 125, bTS0+2, cTS0+2), reply[off:off+1000])
	}
	out := b.feed(false, b.fromServer(primaryIP, b.pISN+1, b.cISN+1+req, rewrite.ACK, 500, pTS0+10, cTS0+2), reply[:1000])
	if len(out) != 1 || !bytes.Equal(out[0].payload, reply[:1000]) {
		t.Fatalf("primary's first 1000 bytes: %d frames", len(out))
	}
	b.feed(true, b.fromClient(b.cISN+1+req, b.pISN+1001, rewrite.ACK, cTS0+3, pTS0+10), nil)
	return b
}

// TestTakeoverMidReply: the primary fails after the client received 1000
// bytes; the backup had sent 3000. The client at once gets bytes 1000-3000
// from the gateway's buffer, in the primary's sequence and timestamp
// spaces, then the backup's later bytes, and the primary is fenced.
func TestTakeoverMidReply(t *testing.T) {
	for _, tc := range isns {
		t.Run(tc.name, func(t *testing.T) {
			reply := replyBytes(4000)
			b := midReply(t, tc, reply, 3000)
			b.now += 30e6
			rec := b.tab.ServerDown(b.now, 0, "probe")
			if rec.FlowsMoved != 1 {
				t.Fatalf("flows moved %d", rec.FlowsMoved)
			}
			out := b.tick(0)
			var fence int
			var got []byte
			for _, s := range out {
				switch {
				case s.side == ServerSide && s.tcp.RST && [4]byte(s.ip.DstIP.To4()) == primaryIP:
					fence++
				case s.side == ClientSide && len(s.payload) > 0:
					if want := b.pISN + 1001 + rewrite.Seq(len(got)); rewrite.Seq(s.tcp.Seq) != want {
						t.Fatalf("replayed seq %d, want %d", s.tcp.Seq, want)
					}
					if v, _, _ := s.ts(); rewrite.TSLess(v, pTS0+10) {
						t.Fatalf("replayed TSval %d went back from %d", v, uint32(pTS0+10))
					}
					if [4]byte(s.ip.SrcIP.To4()) != vip {
						t.Fatalf("replayed from %v", s.ip.SrcIP)
					}
					got = append(got, s.payload...)
				}
			}
			if fence != 1 || !bytes.Equal(got, reply[1000:3000]) {
				t.Fatalf("after takeover: %d fence RSTs, replayed %d bytes; want 1 and 2000", fence, len(got))
			}
			// The backup's next bytes go to the client, translated.
			out = b.feed(false, b.fromServer(backupIP, b.bISN+3001, b.cISN+19, rewrite.ACK|rewrite.FIN, 125, bTS0+40, cTS0+3), reply[3000:])
			if len(out) != 1 || rewrite.Seq(out[0].tcp.Seq) != b.pISN+3001 || !out[0].tcp.FIN || !bytes.Equal(out[0].payload, reply[3000:]) {
				t.Fatalf("backup's reply after takeover: %d frames", len(out))
			}
			// What the client was sent, in its own space, covers the whole
			// reply and the FIN: the gateway's own segments start there.
			if n := b.flow().BytesToClient(); n != 4000 {
				t.Fatalf("bytes to the client after the backup's FIN: %d, want 4000", n)
			}
			if v, _, _ := out[0].ts(); v != bTS0+40-(bTS0-pTS0) {
				t.Fatalf("backup TSval %d, want it in the primary's clock: %d", v, uint32(bTS0+40-(bTS0-pTS0)))
			}
			// The primary is fenced: nothing of it reaches the client, and
			// it is reset again, as its fencing reset was lost.
			if out := b.feed(false, b.fromServer(primaryIP, b.pISN+1001, b.cISN+19, rewrite.ACK, 500, pTS0+11, cTS0+3), reply[1000:2000]); len(out) != 1 ||
				out[0].side != ServerSide || out[0].flags() != "R" {
				t.Fatalf("fenced primary's segment: %d frames, want its reset only: %+v", len(out), out)
			}
			// The client's acks reach the backup only.
			out = b.feed(true, b.fromClient(b.cISN+19, b.pISN+4002, rewrite.ACK, cTS0+4, pTS0+11), nil)
			if len(out) != 1 || [4]byte(out[0].ip.DstIP.To4()) != backupIP || rewrite.Seq(out[0].tcp.Ack) != b.bISN+4002 {
				t.Fatalf("client ack after takeover: %+v", out)
			}
			if rec, _ := b.tab.LastFailover(); rec.StallFlows != 1 || rec.MaxStall != 30e6 {
				t.Fatalf("stall record %+v, want one flow stalled 30ms", rec)
			}
			// 30ms falls in the 50ms bucket, not the 20ms one.
			if h := b.tab.Stats.Stalls; h.Count != 1 || h.Sum != 30e6 || h.Cumulative()[4] != 0 || h.Cumulative()[5] != 1 {
				t.Fatalf("stall histogram %+v, want one 30ms stall", h)
			}
		})
	}
}

func TestTakeoverDivergedResets(t *testing.T) {
	tc := isns[1]
	reply := bytes.Repeat([]byte("a"), 3000)
	b := newBed(t, tc.cISN, tc.pISN, tc.bISN)
	b.handshake()
	b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+1, rewrite.ACK, 125, bTS0+2, cTS0), bytes.Repeat([]byte("b"), 1200))
	b.feed(false, b.fromServer(primaryIP, b.pISN+1, b.cISN+1, rewrite.ACK, 500, pTS0+2, cTS0), reply[:1200])
	b.tab.ServerDown(b.now, 0, "probe")
	var rst, data int
	for _, s := range b.tick(0) {
		if s.side == ClientSide && s.tcp.RST {
			rst++
		}
		if s.side == ClientSide && len(s.payload) > 0 {
			data++
		}
	}
	if rst != 1 || data != 0 || b.tab.Stats.Counters[Divergences] != 1 {
		t.Fatalf("diverged flow: %d RSTs, %d data frames to the client", rst, data)
	}
}

// TestSubstitutionTolerated: replies that differ in a few bytes but realign
// (a Date header) still fail over.
func TestSubstitutionTolerated(t *testing.T) {
	tc := isns[0]
	p := bytes.Repeat([]byte("x"), 3000)
	bk := append([]byte(nil), p...)
	copy(bk[100:], "Date: other second")
	b := newBed(t, tc.cISN, tc.pISN, tc.bISN)
	b.handshake()
	for off := 0; off < 3000; off += 1000 {
		b.feed(false, b.fromServer(backupIP, b.bISN+1+rewrite.Seq(off), b.cISN+1, rewrite.ACK, 125, bTS0+2, cTS0), bk[off:off+1000])
	}
	for off := 0; off < 3000; off += 1000 {
		b.feed(false, b.fromServer(primaryIP, b.pISN+1+rewrite.Seq(off), b.cISN+1, rewrite.ACK, 500, pTS0+2, cTS0), p[off:off+1000])
	}
	if b.tab.Stats.Counters[Substitutions] != 1 {
		t.Fatalf("substitutions %d", b.tab.Stats.Counters[Substitutions])
	}
	if rec := b.tab.ServerDown(b.now, 0, "probe"); rec.FlowsMoved != 1 || rec.FlowsReset != 0 {
		t.Fatalf("record %+v", rec)
	}
}

// TestStandbyLost: the backup fails; the primary carries on ungated.
func TestStandbyLost(t *testing.T) {
	tc := isns[2]
	b := newBed(t, tc.cISN, tc.pISN, tc.bISN)
	b.handshake()
	b.feed(true, b.fromClient(b.cISN+1, b.pISN+1, rewrite.ACK|rewrite.PSH, cTS0+2, pTS0), []byte("hello"))
	// The primary acknowledged; the backup never will: the client is held back.
	out := b.feed(false, b.fromServer(primaryIP, b.pISN+1, b.cISN+6, rewrite.ACK, 500, pTS0+1, cTS0+2), []byte("reply"))
	if rewrite.Seq(out[0].tcp.Ack) != b.cISN+1 {
		t.Fatal("ack not gated")
	}
	rec := b.tab.ServerDown(b.now, 1, "probe")
	if rec.FlowsAlone != 1 {
		t.Fatalf("record %+v", rec)
	}
	var ack, fence int
	for _, s := range b.tick(0) {
		if s.side == ClientSide && rewrite.Seq(s.tcp.Ack) == b.cISN+6 {
			ack++
		}
		if s.side == ServerSide && s.tcp.RST && [4]byte(s.ip.DstIP.To4()) == backupIP {
			fence++
		}
	}
	if ack != 1 || fence != 1 {
		t.Fatalf("after backup loss: %d releasing ACKs, %d fence RSTs", ack, fence)
	}
	out = b.feed(true, b.fromClient(b.cISN+6, b.pISN+6, rewrite.ACK, cTS0+3, pTS0+1), nil)
	if len(out) != 1 || [4]byte(out[0].ip.DstIP.To4()) != primaryIP {
		t.Fatal("client segment still duplicated after the backup failed")
	}
}

// TestFencedServerResetAgain: a failed server whose fencing reset was lost
// (its host was cut off) sends again once it is back. It gets a reset at its
// ack, nothing of it reaches the client, and its own reset draws nothing.
func TestFencedServerResetAgain(t *testing.T) {
	for _, tc := range []struct {
		name   string
		failed int
		ip     [4]byte
		isn    func(b *bed) rewrite.Seq
	}{
		{"primary, after the takeover", 0, primaryIP, func(b *bed) rewrite.Seq { return b.pISN }},
		{"backup, the flow unprotected", 1, backupIP, func(b *bed) rewrite.Seq { return b.bISN }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t, 100, 200, 300)
			b.tab.cfg.MaxResetsPerSecond = 1
			b.handshake()
			b.feed(true, b.fromClient(b.cISN+1, b.pISN+1, rewrite.ACK|rewrite.PSH, cTS0+1, pTS0), []byte("hello"))
			b.tab.ServerDown(b.now, tc.failed, "probe")
			b.tick(0)
			// The server's ack, not what the gateway last acknowledged
			// (cISN+6): a retransmission from before the request.
			late := b.fromServer(tc.ip, tc.isn(b)+1, b.cISN+1, rewrite.ACK|rewrite.PSH, 500, 5, cTS0)
			out := b.feed(false, late, []byte("late"))
			if len(out) != 1 || out[0].side != ServerSide || [4]byte(out[0].ip.DstIP.To4()) != tc.ip ||
				out[0].flags() != "R" || rewrite.Seq(out[0].tcp.Seq) != b.cISN+1 {
				t.Fatalf("%d frames for the failed server's segment, want one reset to it at %d: %+v", len(out), b.cISN+1, out)
			}
			// Within the second's reset budget (here 1).
			if out := b.feed(false, late, []byte("late")); len(out) != 0 {
				t.Fatalf("%d frames for a second segment in the same second, want none: the budget is spent", len(out))
			}
			rst := b.fromServer(tc.ip, tc.isn(b)+5, 0, rewrite.RST, 0, 0, 0)
			rst.HasTS = false
			if out := b.feed(false, rst, nil); len(out) != 0 {
				t.Fatalf("the failed server's reset drew %d frames", len(out))
			}
			if n := b.tab.Stats.Drops[DropDeadLeg]; n != 3 {
				t.Fatalf("dead_leg drops %d, want 3", n)
			}
		})
	}
}

// TestTakeoverDuringHandshake: the primary never answers; the client gets
// the backup's SYN-ACK once the primary is declared down.
func TestTakeoverDuringHandshake(t *testing.T) {
	b := newBed(t, 5, 6, 0xFFFFFFFE)
	b.feed(true, b.fromClient(b.cISN, 0, rewrite.SYN, cTS0, 0), nil)
	bsa := b.fromServer(backupIP, b.bISN, b.cISN+1, rewrite.SYN|rewrite.ACK, 64000, bTS0, cTS0)
	bsa.MSS = 1400
	if out := b.feed(false, bsa, nil); len(out) != 0 {
		t.Fatal("backup SYN-ACK released while the primary's is awaited")
	}
	b.tab.ServerDown(b.now, 0, "probe")
	var sa []seg
	for _, s := range b.tick(0) {
		if s.side == ClientSide && s.flags() == "SA" {
			sa = append(sa, s)
		}
	}
	if len(sa) != 1 || rewrite.Seq(sa[0].tcp.Seq) != b.bISN {
		t.Fatalf("SYN-ACK from the backup: %v", sa)
	}
	// From here the backup's space is the client's view.
	out := b.feed(true, b.fromClient(b.cISN+1, b.bISN+1, rewrite.ACK, cTS0+1, bTS0), nil)
	if len(out) != 1 || rewrite.Seq(out[0].tcp.Ack) != b.bISN+1 || [4]byte(out[0].ip.DstIP.To4()) != backupIP {
		t.Fatalf("handshake ACK after takeover: %+v", out)
	}
}

// TestPrematureFinTakesOver: a crashed primary's kernel closes the
// connection cleanly; the backup has more to send, so it takes over.
func TestPrematureFinTakesOver(t *testing.T) {
	tc := isns[3]
	reply := bytes.Repeat([]byte("q"), 3000)
	b := midReply(t, tc, reply, 3000)
	out := b.feed(false, b.fromServer(primaryIP, b.pISN+1001, b.cISN+19, rewrite.ACK|rewrite.FIN, 500, pTS0+11, cTS0+3), nil)
	out = append(out, b.tick(0)...)
	var replayed int
	for _, s := range out {
		if s.side == ClientSide && s.tcp.FIN {
			t.Fatal("premature FIN reached the client")
		}
		if s.side == ClientSide {
			replayed += len(s.payload)
		}
	}
	if replayed != 2000 || b.tab.Stats.Counters[PrematureFins] != 1 {
		t.Fatalf("replayed %d bytes after a premature FIN", replayed)
	}
}

// TestPrimaryRSTTakesOver: a primary reset on a protected flow is a failure
// signal; the client never sees it and the backup carries the flow on.
func TestPrimaryRSTTakesOver(t *testing.T) {
	tc := isns[0]
	reply := bytes.Repeat([]byte("r"), 3000)
	b := midReply(t, tc, reply, 2000)
	out := b.feed(false, b.fromServer(primaryIP, b.pISN+1001, 0, rewrite.RST, 0, 0, 0), nil)
	out = append(out, b.tick(0)...)
	var replayed int
	for _, s := range out {
		if s.side == ClientSide && s.tcp.RST {
			t.Fatal("primary RST reached the client")
		}
		if s.side == ClientSide {
			replayed += len(s.payload)
		}
	}
	if replayed != 1000 || b.tab.Stats.Counters[Takeovers] != 1 {
		t.Fatalf("replayed %d bytes after a primary RST", replayed)
	}
}

// TestReplayBufferFreed: bytes the client acknowledged are released.
func TestReplayBufferFreed(t *testing.T) {
	tc := isns[1]
	reply := bytes.Repeat([]byte("s"), 3000)
	b := midReply(t, tc, reply, 3000)
	if got := b.flow().replay.bytes; got < 2000 || got > 3000 {
		t.Fatalf("held %d bytes after the client acknowledged 1000 of 3000", got)
	}
	b.feed(false, b.fromServer(primaryIP, b.pISN+1001, b.cISN+19, rewrite.ACK, 500, pTS0+11, cTS0+3), reply[1000:2000])
	b.feed(false, b.fromServer(primaryIP, b.pISN+2001, b.cISN+19, rewrite.ACK, 500, pTS0+11, cTS0+3), reply[2000:3000])
	b.feed(true, b.fromClient(b.cISN+19, b.pISN+3001, rewrite.ACK, cTS0+4, pTS0+11), nil)
	if got := b.flow().replay.bytes; got != 0 || b.tab.replayBytes != 0 {
		t.Fatalf("held %d bytes (table %d) after everything was acknowledged", got, b.tab.replayBytes)
	}
}

// TestAckLagEvidence: the primary stops acknowledging the client's upload
// while the backup keeps up; after the bound the flow reports it, once.
func TestAckLagEvidence(t *testing.T) {
	b := newBed(t, 1, 2, 3)
	b.handshake()
	b.feed(true, b.fromClient(b.cISN+1, b.pISN+1, rewrite.ACK, cTS0+1, pTS0), bytes.Repeat([]byte("u"), 1000))
	for i := 0; i < 6; i++ {
		b.now += 60e6
		b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+1001, rewrite.ACK, 125, bTS0+1, cTS0+1), nil)
	}
	if got := b.tab.Stats.Counters[AckLags]; got != 1 {
		t.Fatalf("ack lag reported %d times, want once", got)
	}
	// The primary catches up: the lag ends.
	b.feed(false, b.fromServer(primaryIP, b.pISN+1, b.cISN+1001, rewrite.ACK, 500, pTS0+1, cTS0+1), nil)
	b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+1001, rewrite.ACK, 125, bTS0+1, cTS0+1), nil)
	if f := b.flow(); f.ackLagSince != 0 {
		t.Fatal("lag not cleared when the primary caught up")
	}
}

// TestSpliceCheckAfterTakeover: the backup lagged the primary. After the
// takeover it resends bytes the client already has — a difference there is
// harmless — but a difference past what the client has is divergence.
func TestSpliceCheckAfterTakeover(t *testing.T) {
	for _, tc := range []struct {
		name    string
		at      int // where the backup's reply differs
		resetOK bool
	}{
		{"Date-like difference the client discards", 100, false},
		{"shifted reply", 500, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t, 10, 20, 30)
			b.handshake()
			p := bytes.Repeat([]byte("p"), 2000)
			bk := append([]byte(nil), p...)
			copy(bk[tc.at:], "DIFFERENT")
			if tc.resetOK {
				for i := tc.at; i < len(bk); i++ {
					bk[i] = byte(i) // the rest of a different reply
				}
			}
			b.feed(false, b.fromServer(primaryIP, b.pISN+1, b.cISN+1, rewrite.ACK, 500, pTS0+1, cTS0), p[:1000])
			b.feed(true, b.fromClient(b.cISN+1, b.pISN+1001, rewrite.ACK, cTS0+1, pTS0+1), nil)
			b.tab.ServerDown(b.now, 0, "probe")
			b.tick(0)
			var rst, data int
			for _, s := range b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+1, rewrite.ACK, 125, bTS0+1, cTS0+1), bk[:1000]) {
				data += len(s.payload)
			}
			for _, s := range append(b.feed(false, b.fromServer(backupIP, b.bISN+1001, b.cISN+1, rewrite.ACK, 125, bTS0+2, cTS0+1), bk[1000:2000]), b.tick(0)...) {
				if s.side == ClientSide && s.tcp.RST {
					rst++
					if rewrite.Seq(s.tcp.Seq) != b.pISN+1001 {
						t.Fatalf("reset at seq %d, want the client's rcv_nxt %d", s.tcp.Seq, b.pISN+1001)
					}
				}
				if s.side == ClientSide {
					data += len(s.payload)
				}
			}
			if got := rst == 1; got != tc.resetOK {
				t.Fatalf("%d resets, %d data bytes to the client", rst, data)
			}
			if tc.resetOK && data > 1000 {
				t.Fatalf("spliced: %d bytes reached the client before the reset", data)
			}
		})
	}
}

// TestTakeoverLaggingBackupJudgedAtSplice: a backup more than two blocks
// behind is compared by whole blocks, so its Date header, ticked past the
// primary's, leaves the flow looking diverged until its next block is
// compared. A takeover then is judged when the backup's stream reaches what
// the client has (the splice 5000), not at once. Until a comparison agrees,
// none of the backup's bytes reach the client, not even ones below the
// splice the client may lack. A Date difference is followed by agreeing
// bytes and the flow goes on; a different reply, or one that closes at or
// short of the splice, is reset.
func TestTakeoverLaggingBackupJudgedAtSplice(t *testing.T) {
	const splice = 5000
	for _, tc := range []struct {
		name    string
		acked   int  // of the primary's stream, by the client
		differs bool // the backup's reply differs from byte 1100 on
		finAt   int  // where the backup closes; 0: it does not
		// resend: the backup sends [1100, 2100) twice and nothing more.
		resend bool
		// lateAck: a second Date-like difference at 1150, and the client's
		// ACK of the splice comes after the backup's [1100, 2100).
		lateAck bool
		reset   bool
		past    int // bytes past the splice the client gets
	}{
		{name: "Date header in a whole block", acked: splice, past: 1000},
		{name: "Date header, client short of the splice", acked: 50, past: 1000},
		{name: "different reply", acked: splice, differs: true, reset: true},
		{name: "different reply, client short of the splice", acked: 50, differs: true, reset: true},
		{name: "different reply closing at the splice", acked: splice, differs: true, finAt: splice, reset: true},
		{name: "same reply closing short of the splice", acked: splice, finAt: 4100, reset: true},
		// The client lacks [1500, 5000): the backup's different bytes there
		// cannot be held for good, nor given.
		{name: "different reply the client lacks, resent", acked: 1500, differs: true, resend: true, reset: true},
		// The client has [1500, 5000) but its ACK is late, delayed: the
		// backup's first copy, differing in a second header, is held until
		// it comes.
		{name: "Date headers in two blocks, the client's ACK late", acked: 1500, lateAck: true, past: 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t, 10, 20, 30)
			b.handshake()
			p := replyBytes(6000)
			bk := append([]byte(nil), p...)
			copy(bk[100:], "Date: other second")
			if tc.differs {
				for i := 1100; i < len(bk); i++ {
					bk[i] = ^p[i]
				}
			}
			if tc.lateAck {
				copy(bk[1150:], "Date: other second")
			}
			for off := 0; off < splice; off += 1000 {
				b.feed(false, b.fromServer(primaryIP, b.pISN+1+rewrite.Seq(off), b.cISN+1, rewrite.ACK, 500, pTS0+1, cTS0), p[off:off+1000])
			}
			b.feed(true, b.fromClient(b.cISN+1, b.pISN+1+rewrite.Seq(tc.acked), rewrite.ACK, cTS0+1, pTS0+1), nil)
			b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+1, rewrite.ACK, 125, bTS0+1, cTS0+1), bk[:1100])
			if !b.flow().Diverged() {
				t.Fatal("the setup: the backup's first block, compared whole, should differ")
			}
			if rec := b.tab.ServerDown(b.now, 0, "probe"); rec.FlowsMoved != 1 || rec.FlowsReset != 0 {
				t.Fatalf("takeover with the backup 3900 bytes short of the splice: %+v, want the flow moved", rec)
			}
			var rst, past int
			var bakAck rewrite.Seq
			var got []seg
			got = append(got, b.tick(0)...)
			segs := [][2]int{{1100, 2100}, {2100, 3100}, {3100, 4100}, {4100, 5100}, {5100, 6000}}
			if tc.resend {
				segs = [][2]int{{1100, 2100}, {1100, 2100}}
			}
			for _, sg := range segs {
				flags := uint8(rewrite.ACK)
				if tc.finAt > 0 && sg[1] >= tc.finAt {
					sg[1], flags = tc.finAt, rewrite.ACK|rewrite.FIN
				}
				got = append(got, b.feed(false, b.fromServer(backupIP, b.bISN+1+rewrite.Seq(sg[0]), b.cISN+1, flags, 125, bTS0+2, cTS0+1), bk[sg[0]:sg[1]])...)
				if tc.lateAck && sg[0] == 1100 {
					got = append(got, b.feed(true, b.fromClient(b.cISN+1, b.pISN+1+splice, rewrite.ACK, cTS0+2, pTS0+1), nil)...)
				}
				if flags&rewrite.FIN != 0 {
					break
				}
			}
			for _, s := range got {
				if s.side != ClientSide {
					if [4]byte(s.ip.DstIP.To4()) == backupIP && s.tcp.ACK && bakAck.LessThan(rewrite.Seq(s.tcp.Ack)) {
						bakAck = rewrite.Seq(s.tcp.Ack)
					}
					continue
				}
				if s.tcp.RST {
					rst++
				}
				start := int(rewrite.Seq(s.tcp.Seq) - (b.pISN + 1))
				end := start + len(s.payload)
				if len(s.payload) > 0 && start < 1100 {
					t.Errorf("the backup's bytes %d to %d, compared as different, reached the client", start, end)
				}
				if tc.differs && len(s.payload) > 0 {
					t.Errorf("the different reply's bytes %d to %d reached the client", start, end)
				}
				if end > splice {
					past += end - max(start, splice)
				}
			}
			// Bytes held from the client that it has are acknowledged to the
			// backup, or it would stall resending them: the different reply's
			// [1100, 4100) before the reset.
			if tc.differs && tc.acked == splice && bakAck != b.bISN+4101 {
				t.Errorf("the backup was acknowledged to %d, want %d: the held bytes the client has", bakAck-(b.bISN+1), 4100)
			}
			if got := rst == 1; got != tc.reset || past != tc.past || b.tab.Stats.Counters[Divergences] != uint64(rst) {
				t.Fatalf("%d resets, %d bytes past the splice, %d divergences; want reset %v, %d bytes", rst, past, b.tab.Stats.Counters[Divergences], tc.reset, tc.past)
			}
		})
	}
}

// TestComparisonResumesAfterLostShadowSegment: a lagging backup's segment
// lost before the gateway is never sent again once the client acknowledged
// the primary's copy — the gateway acknowledges the backup up to it — so
// the comparison moves past the gap instead of stopping there: a reply
// that differs after it is seen, and so is one that agrees. A gap the
// client has not acknowledged is left for the backup's retransmission.
func TestComparisonResumesAfterLostShadowSegment(t *testing.T) {
	for _, tc := range []struct {
		name     string
		acked    int // of the primary's stream, by the client
		differs  bool
		resyncs  uint64
		compared uint64
		diverged bool
	}{
		// The resync comes with the backup's segment after the gateway's
		// ACK past the gap: block 3 whole (the primary no longer holds its
		// sub-blocks) and the 30 full sub-blocks of 4 and 5.
		{"same reply after an acknowledged gap", 6000, false, 1, 1 + 30, false},
		{"different reply after an acknowledged gap", 6000, true, 1, 1 + 30, true},
		// The backup resends the gap and what followed it: blocks 0 to 3
		// whole, and 4 and 5.
		{"gap not acknowledged", 1000, false, 0, 4 + 30, false},
		// Acknowledged to 1500 only: the resync goes to the block after
		// it, and the backup's resent bytes from there are compared:
		// blocks 2 and 3 whole, and 4 and 5.
		{"gap acknowledged in part", 1500, false, 1, 2 + 30, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t, 10, 20, 30)
			b.handshake()
			p := replyBytes(6000)
			bk := append([]byte(nil), p...)
			if tc.differs {
				for i := 4100; i < len(bk); i++ {
					bk[i] = ^p[i]
				}
			}
			for off := 0; off < 6000; off += 1000 {
				b.feed(false, b.fromServer(primaryIP, b.pISN+1+rewrite.Seq(off), b.cISN+1, rewrite.ACK, 500, pTS0+1, cTS0), p[off:off+1000])
			}
			b.feed(true, b.fromClient(b.cISN+1, b.pISN+1+rewrite.Seq(tc.acked), rewrite.ACK, cTS0+1, pTS0+1), nil)
			// [1000, 2000) does not reach the gateway the first time.
			offs := []int{0, 2000, 3000, 4000, 5000}
			switch {
			case tc.resyncs == 0:
				offs = []int{0, 2000, 1000, 2000, 3000, 4000, 5000}
			case tc.acked < 2000:
				offs = []int{0, 4000, 5000, 1000, 2000, 3000, 4000, 5000}
			}
			for _, off := range offs {
				b.feed(false, b.fromServer(backupIP, b.bISN+1+rewrite.Seq(off), b.cISN+1, rewrite.ACK, 125, bTS0+1, cTS0+1), bk[off:off+1000])
			}
			c := b.tab.Stats.Counters
			if c[CompareResyncs] != tc.resyncs || c[BlocksCompared] != tc.compared {
				t.Fatalf("compare_resyncs %d, blocks compared %d; want %d, %d", c[CompareResyncs], c[BlocksCompared], tc.resyncs, tc.compared)
			}
			if d := b.flow().Diverged(); d != tc.diverged {
				t.Fatalf("diverged %v, want %v", d, tc.diverged)
			}
		})
	}
}

// TestHandshakeRetryAfterServiceLoss: a flow whose only server died in the
// handshake is closed; the client's retried SYN starts a new flow.
func TestHandshakeRetryAfterServiceLoss(t *testing.T) {
	b := newBed(t, 7, 8, 9)
	b.tab.SetRoles(0, -1)
	syn := b.fromClient(b.cISN, 0, rewrite.SYN, cTS0, 0)
	b.feed(true, syn, nil)
	b.tab.ServerDown(b.now, 0, "probe")
	b.tick(0)
	if f := b.flow(); f == nil || f.State() != StateClosed {
		t.Fatal("flow not closed when its only server failed")
	}
	b.tab.SetRoles(1, -1)
	out := b.feed(true, syn, nil)
	if len(out) != 1 || [4]byte(out[0].ip.DstIP.To4()) != backupIP || b.flow().State() != StateSynSent {
		t.Fatalf("retried SYN: %d frames", len(out))
	}
}

// TestNewFlowRolesWhy: new flows follow the roles set for them and say why
// they have no shadow; Uses tells which servers a flow still holds.
func TestNewFlowRolesWhy(t *testing.T) {
	cases := []struct {
		name            string
		active, standby int
		why             string
		wantDst         [][4]byte
		wantProt        Protection
		wantWhy         string
	}{
		{"both", 0, 1, "", [][4]byte{primaryIP, backupIP}, Protected, ""},
		{"primary drained", 1, -1, "drained", [][4]byte{backupIP}, Unprotected, "drained"},
		{"backup drained", 0, -1, "drained", [][4]byte{primaryIP}, Unprotected, "drained"},
		{"no standby", 0, -1, "no_standby", [][4]byte{primaryIP}, Unprotected, "no_standby"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t, 7, 8, 9)
			b.tab.SetRolesWhy(tc.active, tc.standby, tc.why)
			out := b.feed(true, b.fromClient(b.cISN, 0, rewrite.SYN, cTS0, 0), nil)
			var dsts [][4]byte
			for _, o := range out {
				dsts = append(dsts, [4]byte(o.ip.DstIP.To4()))
			}
			if len(dsts) != len(tc.wantDst) {
				t.Fatalf("SYN went to %v, want %v", dsts, tc.wantDst)
			}
			for _, d := range tc.wantDst {
				if !slices.Contains(dsts, d) {
					t.Fatalf("SYN went to %v, want %v", dsts, tc.wantDst)
				}
			}
			f := b.flow()
			if f.Protection() != tc.wantProt || f.Why() != tc.wantWhy {
				t.Fatalf("flow %v %q, want %v %q", f.Protection(), f.Why(), tc.wantProt, tc.wantWhy)
			}
			for s, ip := range [][4]byte{primaryIP, backupIP} {
				if got, want := f.Uses(s), slices.Contains(tc.wantDst, ip); got != want {
					t.Errorf("Uses(%d) = %v, want %v", s, got, want)
				}
			}
			// Counted by the server the SYN went to, not by leg.
			c := b.tab.Stats.Counters
			if want := map[bool]uint64{true: 1}[slices.Contains(tc.wantDst, primaryIP)]; c[ToPrimary] != want {
				t.Errorf("to_primary %d, want %d", c[ToPrimary], want)
			}
			if want := map[bool]uint64{true: 1}[slices.Contains(tc.wantDst, backupIP)]; c[ToBackup] != want {
				t.Errorf("to_backup %d, want %d", c[ToBackup], want)
			}
		})
	}
}

// TestTakeoverAtTheReplyEnd covers takeovers where the replay or the FIN
// meets what the client does meanwhile.
func TestTakeoverAtTheReplyEnd(t *testing.T) {
	const get = "GET / HTTP/1.0\r\n\r\n" // 18 bytes
	for _, tc := range isns {
		t.Run(tc.name+": the client's ACK before the replay", func(t *testing.T) {
			// The client acknowledges the failed primary's last bytes
			// between the takeover and the replay, and the chunk holding
			// where the replay was to start is freed: the replay starts
			// at the client's ack instead of giving up.
			reply := replyBytes(6000)
			b := midReply(t, tc, reply, 5000)
			b.feed(false, b.fromServer(primaryIP, b.pISN+1001, b.cISN+19, rewrite.ACK, 500, pTS0+11, cTS0+3), reply[1000:2000])
			b.feed(false, b.fromServer(primaryIP, b.pISN+2001, b.cISN+19, rewrite.ACK, 500, pTS0+11, cTS0+3), reply[2000:3000])
			b.tab.ServerDown(b.now, 0, "probe")
			b.feedInBatch(true, b.fromClient(b.cISN+19, b.pISN+3001, rewrite.ACK, cTS0+4, pTS0+11), nil)
			var got []byte
			for _, s := range append(b.flush(), b.tick(0)...) {
				if s.side == ClientSide {
					got = append(got, s.payload...)
				}
			}
			if !bytes.Equal(got, reply[3000:5000]) {
				t.Fatalf("replayed %d bytes, want the 2000 bytes 3000-5000 the client lacks", len(got))
			}
		})
		t.Run(tc.name+": the backup's FIN again after the client had the FIN", func(t *testing.T) {
			// The FIN's sequence number is no byte of the reply: the
			// backup's FIN at the reply's end continues the client's
			// stream, however late it comes again.
			b := newBed(t, tc.cISN, tc.pISN, tc.bISN)
			b.handshake()
			b.feed(true, b.fromClient(b.cISN+1, b.pISN+1, rewrite.ACK|rewrite.PSH, cTS0+2, pTS0), []byte(get))
			reply := replyBytes(1000)
			b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+19, rewrite.ACK|rewrite.FIN, 125, bTS0+2, cTS0+2), reply)
			out := b.feed(false, b.fromServer(primaryIP, b.pISN+1, b.cISN+19, rewrite.ACK|rewrite.FIN, 500, pTS0+2, cTS0+2), reply)
			if len(out) != 1 || !out[0].tcp.FIN {
				t.Fatalf("the servers' reply and FIN: %+v, want them released", out)
			}
			if rec := b.tab.ServerDown(b.now, 0, "probe"); rec.FlowsMoved != 1 {
				t.Fatalf("flows moved %d, want 1", rec.FlowsMoved)
			}
			b.tick(0)
			out = b.feed(false, b.fromServer(backupIP, b.bISN+1001, b.cISN+19, rewrite.ACK|rewrite.FIN, 125, bTS0+50, cTS0+2), nil)
			for _, s := range append(out, b.tick(0)...) {
				if s.side == ClientSide && s.tcp.RST {
					t.Fatalf("the client was reset (divergences %d)", b.tab.Stats.Counters[Divergences])
				}
			}
			if n := b.tab.Stats.Counters[Divergences]; n != 0 || b.flow().State() == StateClosed {
				t.Fatalf("divergences %d, state %v; want 0, the flow going on", n, b.flow().State())
			}
		})
		t.Run(tc.name+": the FIN after a replay the client's window cut up", func(t *testing.T) {
			b := newBed(t, tc.cISN, tc.pISN, tc.bISN)
			b.handshake()
			b.feed(true, b.fromClient(b.cISN+1, b.pISN+1, rewrite.ACK|rewrite.PSH, cTS0+2, pTS0), []byte(get))
			reply := replyBytes(4000)
			for off := 0; off < 3000; off += 1000 {
				b.feed(false, b.fromServer(backupIP, b.bISN+1+rewrite.Seq(off), b.cISN+19, rewrite.ACK, 125, bTS0+2, cTS0+2), reply[off:off+1000])
			}
			b.feed(false, b.fromServer(backupIP, b.bISN+3001, b.cISN+19, rewrite.ACK|rewrite.FIN, 125, bTS0+2, cTS0+2), reply[3000:])
			b.feed(false, b.fromServer(primaryIP, b.pISN+1, b.cISN+19, rewrite.ACK, 500, pTS0+2, cTS0+2), reply[:1000])
			ack := b.fromClient(b.cISN+19, b.pISN+1001, rewrite.ACK, cTS0+3, pTS0+2)
			ack.Window = 12 // 1536 bytes at the bed's scale
			b.feed(true, ack, nil)
			b.tab.ServerDown(b.now, 0, "probe")
			next, fin := b.pISN+1001, false
			take := func(out []seg) {
				for _, s := range out {
					if s.side != ClientSide {
						continue
					}
					if e := rewrite.Seq(s.tcp.Seq) + rewrite.Seq(len(s.payload)); next.LessThan(e) {
						next = e
					}
					fin = fin || s.tcp.FIN
				}
			}
			take(append(b.flush(), b.tick(0)...))
			for round := 0; round < 10 && !fin; round++ {
				a := b.fromClient(b.cISN+19, next, rewrite.ACK, cTS0+4+uint32(round), pTS0+2)
				a.Window = 12
				take(b.feed(true, a, nil))
			}
			if next != b.pISN+4001 || !fin {
				t.Fatalf("the client got %d bytes, FIN %v; want 4000 and the backup's FIN at once", next-b.pISN-1, fin)
			}
		})
	}
}

// TestClientFinAckedAfterLateFailure: the primary fails once both sides'
// FINs were sent, before it acknowledged the client's; the backup's ACK of
// the client's FIN, sent again, reaches the client.
func TestClientFinAckedAfterLateFailure(t *testing.T) {
	for _, tc := range isns {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t, tc.cISN, tc.pISN, tc.bISN)
			b.handshake()
			b.feed(true, b.fromClient(b.cISN+1, b.pISN+1, rewrite.ACK|rewrite.PSH, cTS0+2, pTS0), []byte("GET / HTTP/1.0\r\n\r\n"))
			reply := replyBytes(1000)
			b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+19, rewrite.ACK|rewrite.FIN, 125, bTS0+2, cTS0+2), reply)
			b.feed(false, b.fromServer(primaryIP, b.pISN+1, b.cISN+19, rewrite.ACK|rewrite.FIN, 500, pTS0+2, cTS0+2), reply)
			b.feed(true, b.fromClient(b.cISN+19, b.pISN+1002, rewrite.ACK|rewrite.FIN, cTS0+3, pTS0+2), nil)
			b.tab.ServerDown(b.now, 0, "probe")
			b.tick(0)
			b.feed(true, b.fromClient(b.cISN+19, b.pISN+1002, rewrite.ACK|rewrite.FIN, cTS0+300, pTS0+2), nil)
			out := b.feed(false, b.fromServer(backupIP, b.bISN+1002, b.cISN+20, rewrite.ACK, 125, bTS0+60, cTS0+300), nil)
			for _, s := range append(out, b.tick(0)...) {
				if s.side == ClientSide && rewrite.Seq(s.tcp.Ack) == b.cISN+20 {
					return
				}
			}
			t.Fatalf("the client's FIN is never acknowledged (flow %v)", b.flow().State())
		})
	}
}

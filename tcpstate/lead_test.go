package tcpstate

import (
	"bytes"
	"testing"
	"time"

	"understudy/rewrite"
)

// newBedLead makes a bed whose live leg may run at most lead bytes ahead of
// the backup's reply (Config.MaxLead), every client ACK forwarded at once.
func newBedLead(t *testing.T, cISN, pISN, bISN rewrite.Seq, lead int) *bed {
	t.Helper()
	b := newBed(t, cISN, pISN, bISN)
	cfg := b.tab.Config()
	cfg.MaxLead = lead
	cfg.LeadWait = 2 * time.Second // shorter than the default: fewer steps to walk
	b.tab = New(cfg)
	return b
}

// offered is the right edge, as a stream offset of the primary's reply, that
// a frame to the primary offers: the bed's client window scale is 7.
func (b *bed) offered(s seg) uint32 {
	return uint32(rewrite.Seq(s.tcp.Ack)-b.pISN-1) + uint32(s.tcp.Window)<<7
}

// toPrimary returns the frames of out addressed to the primary.
func toPrimary(out []seg) []seg {
	var p []seg
	for _, s := range out {
		if s.side == ServerSide && [4]byte(s.ip.DstIP.To4()) == primaryIP {
			p = append(p, s)
		}
	}
	return p
}

// TestLeadBound: the primary is offered a window that lets its reply run at
// most MaxLead bytes ahead of the backup's, never less than it was offered
// before; the backup's progress opens it with a window update; a backup that
// sends nothing while it holds the primary back leaves the flow.
func TestLeadBound(t *testing.T) {
	for _, tc := range isns {
		for _, differs := range []bool{false, true} {
			name := tc.name
			if differs {
				name += ", replies differ"
			}
			t.Run(name, func(t *testing.T) { leadBoundCase(t, tc.cISN, tc.pISN, tc.bISN, differs) })
		}
	}
}

// leadBoundCase is one run of TestLeadBound. With differs, the backup's
// bytes differ from the primary's, as whole blocks with a Date header that
// ticked do: the flow looks diverged and is held all the same.
func leadBoundCase(t *testing.T, cISN, pISN, bISN rewrite.Seq, differs bool) {
	const lead = 8000
	clientWin := uint32(1000) << 7 // the bed's client offers 128000 bytes
	b := newBedLead(t, cISN, pISN, bISN, lead)
	b.handshake()
	p, bk := b.split(b.feed(true, b.fromClient(b.cISN+1, b.pISN+1, rewrite.ACK|rewrite.PSH, cTS0+2, pTS0), []byte("GET")))
	if bk.tcp.Window != 1000 {
		t.Fatalf("backup offered window %d, want the client's 1000", bk.tcp.Window)
	}
	edge := b.offered(p)
	if edge > lead || edge+128 <= lead {
		t.Fatalf("primary offered up to offset %d, want the %d-byte lead rounded down to the scale", edge, lead)
	}
	if n := b.tab.Stats.Counters[LeadLimits]; n == 0 {
		t.Fatal("lead_limits not counted")
	}

	// The primary sends 6000 bytes; the backup none. The client's
	// ACK of them offers the primary no more than it had.
	chunk := bytes.Repeat([]byte("r"), 1000)
	for k := rewrite.Seq(0); k < 6; k++ {
		b.feed(false, b.fromServer(primaryIP, b.pISN+1+k*1000, b.cISN+4, rewrite.ACK, 500, pTS0+1, cTS0+2), chunk)
	}
	// The backup, which sent nothing yet, gets nothing: clamped, the ACK
	// would repeat what the request told it.
	out := b.feed(true, b.fromClient(b.cISN+4, b.pISN+6001, rewrite.ACK, cTS0+3, pTS0+1), nil)
	if ps := toPrimary(out); len(ps) != 1 || len(out) != 1 {
		t.Fatalf("client's ACK: %d frames, %d of them to the primary; want only the primary's", len(out), len(ps))
	}
	p = out[0]
	if e := b.offered(p); e < edge || e >= lead+128 {
		t.Fatalf("after the client's ACK the primary is offered up to %d, want %d..%d", e, edge, lead+127)
	}
	edge = b.offered(p)

	// The backup's 5000 bytes open the primary's window: one window
	// update at the batch's end, besides the backup's own ACK.
	backupChunk := chunk
	if differs {
		backupChunk = bytes.Repeat([]byte("d"), 1000)
	}
	for k := rewrite.Seq(0); k < 5; k++ {
		out := b.feedInBatch(false, b.fromServer(backupIP, b.bISN+1+k*1000, b.cISN+4, rewrite.ACK, 125, bTS0+1, cTS0+2), backupChunk)
		if len(toPrimary(out)) != 0 {
			t.Fatalf("backup segment %d: %d frames to the primary before the batch's end", k, len(toPrimary(out)))
		}
	}
	if b.flow().Diverged() != differs {
		t.Fatalf("flow diverged %v, want %v", b.flow().Diverged(), differs)
	}
	up := toPrimary(b.flush())
	if len(up) != 1 || up[0].flags() != "A" || rewrite.Seq(up[0].tcp.Ack) != b.pISN+6001 {
		t.Fatalf("batch end: %d frames to the primary, want one window update acknowledging %d", len(up), b.pISN+6001)
	}
	if e := b.offered(up[0]); e <= edge || e > 5000+lead {
		t.Fatalf("window update offers up to %d, want past %d and within %d", e, edge, 5000+lead)
	}
	edge = b.offered(up[0])
	// A backup segment that opens less than a quarter of the lead
	// is no reason for a frame.
	out = b.feed(false, b.fromServer(backupIP, b.bISN+5001, b.cISN+4, rewrite.ACK, 125, bTS0+2, cTS0+2), chunk[:100])
	if len(toPrimary(out)) != 0 {
		t.Fatalf("a 100-byte step of the backup sent the primary %d frames", len(toPrimary(out)))
	}

	// The primary fills what it was offered and the client takes it;
	// the backup then stays quiet. Each LeadPause the primary may go a
	// quarter of the lead further; once LeadWait passes the backup leaves
	// the flow and the primary is offered the client's whole window.
	sent := uint32(6000)
	fill := func() {
		for sent < edge {
			n := min(1000, edge-sent)
			b.feed(false, b.fromServer(primaryIP, b.pISN+1+rewrite.Seq(sent), b.cISN+4, rewrite.ACK, 500, pTS0+2, cTS0+2), chunk[:n])
			sent += n
		}
		b.feed(true, b.fromClient(b.cISN+4, b.pISN+1+rewrite.Seq(sent), rewrite.ACK, cTS0+4, pTS0+2), nil)
	}
	fill()
	quiet, graces := time.Duration(0), 0
	for b.flow().Protection() == Protected {
		if quiet > 3*time.Second {
			t.Fatalf("the backup was quiet for %v and is still in the flow", quiet)
		}
		out = b.tick(100 * time.Millisecond)
		quiet += 100 * time.Millisecond
		up = toPrimary(out)
		if b.flow().Protection() != Protected {
			break
		}
		if len(up) == 0 {
			continue
		}
		if len(up) != 1 || b.offered(up[0]) <= edge || b.offered(up[0]) > edge+lead/4+2*128 {
			t.Fatalf("%v quiet: %d frames to the primary, want one window update a quarter of the lead past %d", quiet, len(up), edge)
		}
		edge = b.offered(up[0])
		graces++
		fill()
	}
	if f := b.flow(); f.Why() != "shadow_stalled" || quiet < 2*time.Second {
		t.Fatalf("after %v quiet the flow is unprotected: %q, want shadow_stalled after LeadWait", quiet, f.Why())
	}
	if n := b.tab.Stats.Counters[LeadGraces]; graces < 5 || n != uint64(graces) {
		t.Fatalf("%d window updates for a quiet backup, lead_graces %d; want one per LeadPause", graces, n)
	}
	if len(up) != 1 || b.offered(up[0]) != sent+clientWin {
		t.Fatalf("after the backup left: %d frames to the primary, want one offering the client's window", len(up))
	}
}

// TestLeadBoundConfig: the default bound is wider than a small client
// window, and a negative MaxLead turns it off.
func TestLeadBoundConfig(t *testing.T) {
	cases := []struct {
		name   string
		lead   int
		narrow bool
	}{
		{"default, within the client's window", 0, false},
		{"off", -1, false},
		{"small", 4096, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newBedLead(t, 1000, 5000, 900000, tc.lead)
			b.handshake()
			p, _ := b.split(b.feed(true, b.fromClient(b.cISN+1, b.pISN+1, rewrite.ACK|rewrite.PSH, cTS0+2, pTS0), []byte("GET")))
			if narrowed := p.tcp.Window != 1000; narrowed != tc.narrow {
				t.Fatalf("primary offered window %d; narrowed %v, want %v", p.tcp.Window, narrowed, tc.narrow)
			}
		})
	}
	if got := (Config{}).WithDefaults(); got.MaxLead != 128<<10 || got.LeadWait != 10*time.Second {
		t.Fatalf("defaults MaxLead %d LeadWait %v", got.MaxLead, got.LeadWait)
	}
}

// TestLeadBoundUpdates: a window update always opens the live leg's window —
// also when the client's own window, not the bound, is left as the limit,
// and when the bound is smaller than the window scale's unit — and a
// backup that caught up is not taken for a stalled one.
func TestLeadBoundUpdates(t *testing.T) {
	cases := []struct {
		name      string
		lead      int
		primary   int    // bytes the primary sends before the client's ACK
		clientWin uint16 // the window field of that ACK (scale 7)
		backup    []int  // bytes the backup sends, a batch each
		wantLast  uint32 // the edge the last update offers
	}{
		// The handshake offered the primary up to 1000 (the client's SYN
		// window): the bound never takes it below that.
		{"client window is the limit", 64000, 64000, 80, []int{1000, 1000, 72000}, 64000 + 80<<7},
		{"bound below the scale's unit", 400, 1024, 1000, []int{100, 100, 100, 100, 100, 100, 100, 100, 70, 30, 100, 100}, 1024 + 2*128},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newBedLead(t, 1000, 5000, 900000, tc.lead)
			b.handshake()
			b.feed(true, b.fromClient(b.cISN+1, b.pISN+1, rewrite.ACK|rewrite.PSH, cTS0+2, pTS0), []byte("GET"))
			for sent := 0; sent < tc.primary; sent += 1000 {
				n := min(1000, tc.primary-sent)
				b.feed(false, b.fromServer(primaryIP, b.pISN+1+rewrite.Seq(sent), b.cISN+4, rewrite.ACK, 500, pTS0+1, cTS0+2), make([]byte, n))
			}
			ack := b.fromClient(b.cISN+4, b.pISN+1+rewrite.Seq(tc.primary), rewrite.ACK, cTS0+3, pTS0+1)
			ack.Window = tc.clientWin
			// The backup, which sent nothing yet, may get nothing: clamped,
			// the ACK repeats what the request told it.
			ps := toPrimary(b.feed(true, ack, nil))
			if len(ps) != 1 {
				t.Fatalf("client ACK: %d frames to the primary, want 1", len(ps))
			}
			last := b.offered(ps[0])
			var updates int
			off := 0
			for _, batch := range tc.backup {
				for end := off + batch; off < end; {
					n := min(1000, end-off)
					b.feedInBatch(false, b.fromServer(backupIP, b.bISN+1+rewrite.Seq(off), b.cISN+4, rewrite.ACK, 125, bTS0+1, cTS0+2), make([]byte, n))
					off += n
				}
				for _, s := range toPrimary(b.flush()) {
					if e := b.offered(s); e <= last {
						t.Fatalf("after %d backup bytes the primary got an ACK offering up to %d, no more than %d before", off, e, last)
					}
					last = b.offered(s)
					updates++
				}
			}
			if updates == 0 || last != tc.wantLast {
				t.Fatalf("%d updates, the last offering up to %d; want %d", updates, last, tc.wantLast)
			}
			b.tick(3 * time.Second)
			if f := b.flow(); f.Protection() != Protected {
				t.Fatalf("a backup that caught up left the flow: %q", f.Why())
			}
		})
	}
}

// TestLeadPausesResume: more held flows fall due at once than one call may
// emit frames for; the next call goes on where the first stopped, and each
// flow gets its one window update.
func TestLeadPausesResume(t *testing.T) {
	const lead, flows = 1400, maxOut + 8
	b := newBedLead(t, 1000, 5000, 900000, lead)
	port := func(s rewrite.Spec, k int, fromClient bool) rewrite.Spec {
		if fromClient {
			s.SrcPort = cport + uint16(k)
		} else {
			s.DstPort = cport + uint16(k)
		}
		return s
	}
	for k := 0; k < flows; k++ {
		syn := port(b.fromClient(b.cISN, 0, rewrite.SYN, cTS0, 0), k, true)
		syn.MSS, syn.WScale, syn.SACKPermitted = 1460, 7, true
		b.feed(true, syn, nil)
		for _, sv := range []struct {
			ip  [4]byte
			isn rewrite.Seq
			ts  uint32
		}{{primaryIP, b.pISN, pTS0}, {backupIP, b.bISN, bTS0}} {
			sa := port(b.fromServer(sv.ip, sv.isn, b.cISN+1, rewrite.SYN|rewrite.ACK, 65160, sv.ts, cTS0), k, false)
			sa.MSS, sa.WScale, sa.SACKPermitted = 1460, 7, true
			b.feed(false, sa, nil)
		}
		b.feed(true, port(b.fromClient(b.cISN+1, b.pISN+1, rewrite.ACK|rewrite.PSH, cTS0+1, pTS0), k, true), []byte("GET"))
		// The primary's reply fills the bound, rounded down to the window
		// scale's unit; the backup sends none.
		b.feed(false, port(b.fromServer(primaryIP, b.pISN+1, b.cISN+4, rewrite.ACK, 500, pTS0+1, cTS0+1), k, false), make([]byte, lead/128*128))
	}
	b.now += int64(200 * time.Millisecond)
	var got int
	for call := 0; call < 3; call++ {
		b.out.Reset()
		more := b.tab.Tick(b.now, b.out)
		got += len(toPrimary(b.collect()))
		if !more {
			break
		}
	}
	if got != flows || b.tab.Stats.Counters[LeadGraces] != flows {
		t.Fatalf("%d window updates and %d graces for %d held flows, want one each", got, b.tab.Stats.Counters[LeadGraces], flows)
	}
}

package rewrite

import (
	"bytes"
	"testing"

	"github.com/gopacket/gopacket/layers"
)

// seedFrames are well-formed frames of the shapes the gateway sees.
func seedFrames(t testing.TB) [][]byte {
	syn := baseSeg()
	syn.flags = SYN
	syn.payload = nil
	syn.opts = []layers.TCPOption{optMSSOpt(1460), optSACKPermOpt(), optTSOpt(1, 0), nopOpt(), optWSOpt(7)}
	ipo := baseSeg()
	ipo.ipOpts = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 1}}
	ipo.opts = []layers.TCPOption{nopOpt(), optTSOpt(7, 8), optSACKOpt(1, 2, 3, 4, 5, 6, 7, 8)}
	var built [BuildMin]byte
	var p Packet
	n := Build(built[:], &Spec{Src: vip, Dst: clientIP, SrcPort: 80, DstPort: 1, Flags: ACK, WScale: -1, HasTS: true}, &p)
	return [][]byte{
		baseSeg().frame(t),
		syn.frame(t),
		ipo.frame(t),
		ackWithSACK(t, 0),
		ackWithSACK(t, 33),
		built[:n],
	}
}

// FuzzParse feeds arbitrary bytes to Parse. It must not panic; an accepted
// frame must survive every accessor and setter, and its rewritten form must
// have valid checksums whenever the input's were.
func FuzzParse(f *testing.F) {
	for _, fr := range seedFrames(f) {
		f.Add(fr, false)
		g := append([]byte(nil), fr...)
		makePartial(g)
		f.Add(g, true)
	}
	f.Add([]byte{}, false)
	f.Add(make([]byte, 60), false)
	f.Fuzz(func(t *testing.T, data []byte, partial bool) {
		frame := append([]byte(nil), data...)
		var p Packet
		r := p.Parse(frame, partial, false)
		if r >= NumReasons || r.String() == "unknown" {
			t.Fatalf("reason %d", r)
		}
		var v Packet
		rv := v.Parse(append([]byte(nil), data...), partial, true)
		if r != OK {
			if rv != r {
				t.Fatalf("verify changed the reason: %v then %v", r, rv)
			}
			return
		}
		ipOK, tcpOK := refVerify(p.Frame())
		if p.VerifyChecksums() != (ipOK && tcpOK) {
			t.Fatalf("VerifyChecksums %v, reference ip %v tcp %v", p.VerifyChecksums(), ipOK, tcpOK)
		}
		if want := map[bool]Reason{true: OK, false: ReasonBadChecksum}[partial || ipOK && tcpOK]; rv != want {
			t.Fatalf("verified Parse = %v, want %v", rv, want)
		}
		if !bytes.Equal(p.Frame(), data[:len(p.Frame())]) {
			t.Fatal("view is not a prefix of the input")
		}

		// Accessors.
		_, _ = p.SrcIP(), p.DstIP()
		_, _, _, _ = p.SrcPort(), p.DstPort(), p.Seq(), p.Ack()
		_, _, _ = p.Flags(), p.Window(), p.SegLen()
		if len(p.Payload()) != p.PayloadLen() {
			t.Fatal("payload length")
		}
		_, _ = p.MSS()
		_, _ = p.WScale()
		_ = p.SACKPermitted()
		_, _, _ = p.Timestamps()
		if p.NumSACK() > MaxSACK {
			t.Fatalf("%d SACK blocks", p.NumSACK())
		}
		for i := range p.NumSACK() {
			p.SACKBlock(i)
		}

		// Setters, then the rewritten frame must parse to the same view.
		p.SetSrcIP(vip)
		p.SetDstIP(backupIP)
		p.SetSeq(p.Seq().Add(0x80000001))
		p.SetAck(0xFFFFFFFF)
		p.SetFlags(p.Flags() ^ PSH)
		p.SetWindow(^p.Window())
		p.SetMSS(1200)
		p.SetTimestamps(0xFFFFFFFF, 1)
		for i := range p.NumSACK() {
			l, r := p.SACKBlock(i)
			p.SetSACKBlock(i, l.Add(0xFFFFFFF0), r.Add(0xFFFFFFF0))
		}
		if p.NumSACK() > 0 {
			p.TruncateSACK(p.NumSACK() - 1)
		}
		p.TrimPayload(p.PayloadLen() / 2)
		p.Finish()
		if ipOK && (partial || tcpOK) {
			if !p.VerifyChecksums() {
				t.Fatal("checksums invalid after rewrite")
			}
			if i, c := refVerify(p.Frame()); !i || !c {
				t.Fatalf("reference: ip %v tcp %v after rewrite", i, c)
			}
		}
		var q Packet
		if r := q.Parse(p.Frame(), false, false); r != OK || !sameView(&p, &q) {
			t.Fatalf("rewritten frame re-parses as %v", r)
		}
	})
}

// FuzzRewrite applies arbitrary rewrites to valid frames with arbitrary
// option areas; every output must decode in gopacket with valid checksums
// and carry the values written.
func FuzzRewrite(f *testing.F) {
	f.Add([]byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1, 5, 18, 0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 0x10, 0, 0, 1, 0, 0, 0, 2, 0},
		[]byte("hello"), uint32(0xFFFFFFF0), uint32(0xFFFFFFFF), uint32(1), uint32(2), uint16(100), ACK, uint16(1460), uint16(3), uint8(1), false)
	f.Add([]byte{2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7},
		[]byte{}, uint32(0), uint32(0), uint32(0xFFFFFFFF), uint32(0), uint16(0xffff), SYN|ACK, uint16(536), uint16(0), uint8(0), true)
	f.Add([]byte{1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8, 5, 10, 1, 2, 3, 4, 5, 6, 7, 8},
		[]byte("odd"), uint32(7), uint32(8), uint32(9), uint32(10), uint16(1), FIN|ACK, uint16(9000), uint16(1), uint8(0), true)
	f.Fuzz(func(t *testing.T, opts, payload []byte, seq, ack, tsv, tse uint32, win uint16, flags uint8, mss, trim uint16, keep uint8, partial bool) {
		if len(opts) > 40 {
			opts = opts[:40]
		}
		if len(payload) > 1500 {
			payload = payload[:1500]
		}
		s := baseSeg()
		s.payload = payload
		frame := s.rawOpts(t, opts)
		if partial {
			makePartial(frame)
		}
		var p Packet
		if p.Parse(frame, partial, !partial) != OK {
			return // an option area Parse rejects; FuzzParse covers those
		}
		p.SetSrcIP(vip)
		p.SetDstIP(primaryIP)
		p.SetSeq(Seq(seq))
		p.SetAck(Seq(ack))
		p.SetFlags(flags)
		p.SetWindow(win)
		p.SetMSS(mss)
		p.SetTimestamps(tsv, tse)
		for i := range p.NumSACK() {
			p.SetSACKBlock(i, Seq(ack).Add(uint32(i)), Seq(ack).Add(uint32(i)+0x8000))
		}
		p.TruncateSACK(int(keep % (MaxSACK + 1)))
		if n := int(trim) % (p.PayloadLen() + 1); n < p.PayloadLen() {
			p.TrimPayload(n)
			flags &^= FIN | PSH // they go with the cut tail
		}
		p.Finish()

		d := decode(t, p.Frame())
		if [4]byte(d.ip.SrcIP.To4()) != vip || [4]byte(d.ip.DstIP.To4()) != primaryIP ||
			d.tcp.Seq != seq || d.tcp.Ack != ack || d.tcp.Window != win || d.flags() != flags ||
			len(d.tcp.Payload) != p.PayloadLen() || !bytes.Equal(d.tcp.Payload, payload[:p.PayloadLen()]) {
			t.Fatalf("decoded %+v", d.tcp)
		}
		var q Packet
		if r := q.Parse(p.Frame(), false, true); r != OK || !sameView(&p, &q) {
			t.Fatalf("rewritten frame re-parses as %v", r)
		}
		if m, ok := q.MSS(); ok && m != mss {
			t.Fatalf("MSS %d", m)
		}
		if v, e, ok := q.Timestamps(); ok && (v != tsv || e != tse) {
			t.Fatalf("TS %d %d", v, e)
		}
		for i := range q.NumSACK() {
			if l, r := q.SACKBlock(i); l != Seq(ack).Add(uint32(i)) || r != Seq(ack).Add(uint32(i)+0x8000) {
				t.Fatalf("SACK %d: %#x-%#x", i, l, r)
			}
		}
	})
}

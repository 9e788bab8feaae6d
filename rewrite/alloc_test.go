package rewrite

import (
	"testing"

	"github.com/gopacket/gopacket/layers"
)

// ackWithSACK is a typical client segment on the backup leg: an ACK with
// timestamps and SACK blocks, carrying payload of n bytes.
func ackWithSACK(t testing.TB, n int) []byte {
	s := baseSeg()
	s.payload = make([]byte, n)
	for i := range s.payload {
		s.payload[i] = byte(i)
	}
	s.opts = []layers.TCPOption{nopOpt(), nopOpt(), optTSOpt(1000, 2000), nopOpt(), nopOpt(),
		optSACKOpt(0xFFFFFFF0, 0x10, 0x100, 0x200)}
	return s.frame(t)
}

// TestZeroAllocs holds the per-segment path to its budget: nothing.
func TestZeroAllocs(t *testing.T) {
	orig := ackWithSACK(t, 100)
	frame := append([]byte(nil), orig...)
	buf := make([]byte, 2048)
	var p, q Packet
	spec := &Spec{Src: vip, Dst: clientIP, SrcPort: 80, DstPort: 40000, Flags: SYN | ACK,
		MSS: 1460, WScale: 7, SACKPermitted: true, HasTS: true, TSval: 1, TSecr: 2}
	var sink uint64
	cases := []struct {
		name string
		fn   func()
	}{
		{"Parse", func() { p.Parse(frame, false, true) }},
		{"ParsePartial", func() { p.Parse(frame, true, false) }},
		{"CopyTo", func() { p.CopyTo(buf, &q) }},
		{"Accessors", func() {
			a, b := p.SrcIP(), p.DstIP()
			v, e, _ := p.Timestamps()
			l, r := p.SACKBlock(0)
			m, _ := p.MSS()
			w, _ := p.WScale()
			sink += uint64(a[0]+b[0]) + uint64(p.SrcPort()+p.DstPort()) + uint64(p.Seq()+p.Ack()+l+r) +
				uint64(p.Flags()) + uint64(p.Window()) + uint64(len(p.Payload())+p.PayloadLen()+p.NumSACK()) +
				uint64(p.SegLen()) + uint64(v+e) + uint64(m) + uint64(w)
			if p.SACKPermitted() {
				sink++
			}
		}},
		{"Setters", func() {
			p.SetSrcIP(vip)
			p.SetDstIP(backupIP)
			p.SetSeq(1)
			p.SetAck(2)
			p.SetFlags(ACK)
			p.SetWindow(3)
			p.SetMSS(4)
			p.SetTimestamps(5, 6)
			p.SetSACKBlock(0, 7, 8)
		}},
		{"TruncateSACK+TrimPayload", func() {
			copy(frame, orig)
			p.Parse(frame, false, false)
			p.TruncateSACK(1)
			p.TrimPayload(10)
		}},
		{"Finish", func() {
			p.Parse(frame, true, false)
			p.Finish()
		}},
		{"VerifyChecksums", func() { p.VerifyChecksums() }},
		{"Build", func() { Build(buf, spec, &q) }},
	}
	for _, c := range cases {
		copy(frame, orig)
		p.Parse(frame, false, false)
		if n := testing.AllocsPerRun(100, c.fn); n != 0 {
			t.Errorf("%s: %v allocs per run, want 0", c.name, n)
		}
	}
	_ = sink
}

// BenchmarkRewrite is the backup-leg rewrite of one client segment.
func BenchmarkRewrite(b *testing.B) {
	for _, bc := range []struct {
		name    string
		payload int
		partial bool
	}{
		{"ack", 0, false},
		{"data1448", 1448, false},
		{"data1448-partial", 1448, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			orig := ackWithSACK(b, bc.payload)
			if bc.partial {
				makePartial(orig)
			}
			frame := append([]byte(nil), orig...)
			var p Packet
			b.ReportAllocs()
			b.SetBytes(int64(len(orig)))
			var ack Seq = 0xFFFFFFF0
			for b.Loop() {
				if p.Parse(frame, bc.partial, false) != OK {
					b.Fatal("parse")
				}
				ack = ack.Add(1)
				p.SetDstIP(backupIP)
				p.SetAck(ack)
				v, e, _ := p.Timestamps()
				p.SetTimestamps(v, e+1)
				l, r := p.SACKBlock(0)
				p.SetSACKBlock(0, l.Add(1), r.Add(1))
				p.Finish()
			}
		})
	}
}

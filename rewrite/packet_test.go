package rewrite

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/gopacket/gopacket/layers"
)

func TestReasonString(t *testing.T) {
	want := []string{"ok", "short", "not_ipv4", "bad_ihl", "bad_length", "fragment",
		"not_tcp", "bad_data_offset", "bad_option", "bad_checksum"}
	if len(want) != int(NumReasons) {
		t.Fatalf("%d names for %d reasons", len(want), NumReasons)
	}
	for i, w := range want {
		if got := Reason(i).String(); got != w {
			t.Errorf("Reason(%d) = %q, want %q", i, got, w)
		}
	}
	if got := NumReasons.String(); got != "unknown" {
		t.Errorf("NumReasons.String() = %q", got)
	}
}

func TestParseAccept(t *testing.T) {
	full := baseSeg()
	full.flags = SYN | ACK
	full.payload = nil
	full.opts = []layers.TCPOption{optMSSOpt(1460), optSACKPermOpt(), optTSOpt(111, 222), nopOpt(), optWSOpt(7)}

	sack := baseSeg()
	sack.payload = nil
	sack.opts = []layers.TCPOption{nopOpt(), nopOpt(), optTSOpt(5, 6), nopOpt(), nopOpt(),
		optSACKOpt(0xFFFFFFF0, 0x10, 0x20, 0x30)}

	ipopts := baseSeg()
	ipopts.ipOpts = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 1}}

	padded := baseSeg()
	padded.payload = nil
	padded.opts = nil

	type want struct {
		payload   int
		mss       int // -1 absent
		ws        int
		sackPerm  bool
		ts        bool
		nsack     int
		frameLen  int
		tsVal     uint32
		sackLeft0 Seq
	}
	cases := []struct {
		name    string
		frame   func(t *testing.T) []byte
		partial bool
		verify  bool
		want    want
	}{
		{"data no options", func(t *testing.T) []byte { return baseSeg().frame(t) }, false, true,
			want{payload: 27, mss: -1, ws: -1, frameLen: 14 + 20 + 20 + 27}},
		{"syn-ack all options", func(t *testing.T) []byte { return full.frame(t) }, false, true,
			want{mss: 1460, ws: 7, sackPerm: true, ts: true, tsVal: 111, frameLen: 14 + 20 + 40}},
		{"ack ts and 2 sack blocks", func(t *testing.T) []byte { return sack.frame(t) }, false, true,
			want{mss: -1, ws: -1, ts: true, tsVal: 5, nsack: 2, sackLeft0: 0xFFFFFFF0, frameLen: 14 + 20 + 20 + 32}},
		{"ip options", func(t *testing.T) []byte { return ipopts.frame(t) }, false, true,
			want{payload: 27, mss: -1, ws: -1, frameLen: 14 + 24 + 20 + 27}},
		{"ethernet padding trimmed", func(t *testing.T) []byte {
			return append(padded.frame(t), 0, 0, 0, 0, 0, 0)
		}, false, true, want{mss: -1, ws: -1, frameLen: 54}},
		{"eol ends walk, garbage after it ignored", func(t *testing.T) []byte {
			return baseSeg().rawOpts(t, []byte{2, 4, 5, 0xb4, 0, 0xff, 0, 1})
		}, false, true, want{payload: 27, mss: 1460, ws: -1, frameLen: 14 + 20 + 28 + 27}},
		{"unknown option skipped by length", func(t *testing.T) []byte {
			return baseSeg().rawOpts(t, []byte{30, 6, 1, 2, 3, 4, 3, 3, 9})
		}, false, true, want{payload: 27, mss: -1, ws: 9, frameLen: 14 + 20 + 32 + 27}},
		{"unaligned timestamps", func(t *testing.T) []byte {
			return baseSeg().rawOpts(t, []byte{1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 1})
		}, false, true, want{payload: 27, mss: -1, ws: -1, ts: true, tsVal: 9, frameLen: 14 + 20 + 32 + 27}},
		{"bad checksum accepted without verify", func(t *testing.T) []byte {
			f := baseSeg().frame(t)
			f[len(f)-1] ^= 0xff
			return f
		}, false, false, want{payload: 27, mss: -1, ws: -1, frameLen: 14 + 20 + 20 + 27}},
		{"partial checksum not verified", func(t *testing.T) []byte {
			f := baseSeg().frame(t)
			makePartial(f)
			return f
		}, true, true, want{payload: 27, mss: -1, ws: -1, frameLen: 14 + 20 + 20 + 27}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var p Packet
			if r := p.Parse(c.frame(t), c.partial, c.verify); r != OK {
				t.Fatalf("Parse = %v", r)
			}
			w := c.want
			if got := len(p.Frame()); got != w.frameLen {
				t.Errorf("frame len %d, want %d", got, w.frameLen)
			}
			if got := p.PayloadLen(); got != w.payload {
				t.Errorf("payload %d, want %d", got, w.payload)
			}
			if m, ok := p.MSS(); ok != (w.mss >= 0) || ok && int(m) != w.mss {
				t.Errorf("MSS %d %v, want %d", m, ok, w.mss)
			}
			if s, ok := p.WScale(); ok != (w.ws >= 0) || ok && int(s) != w.ws {
				t.Errorf("WScale %d %v, want %d", s, ok, w.ws)
			}
			if p.SACKPermitted() != w.sackPerm {
				t.Errorf("SACKPermitted %v", p.SACKPermitted())
			}
			if v, _, ok := p.Timestamps(); ok != w.ts || v != w.tsVal {
				t.Errorf("Timestamps %d %v, want %d %v", v, ok, w.tsVal, w.ts)
			}
			if p.NumSACK() != w.nsack {
				t.Errorf("NumSACK %d, want %d", p.NumSACK(), w.nsack)
			}
			if w.nsack > 0 {
				if l, _ := p.SACKBlock(0); l != w.sackLeft0 {
					t.Errorf("SACK left edge %#x, want %#x", l, w.sackLeft0)
				}
			}
		})
	}
}

func TestParseFields(t *testing.T) {
	s := baseSeg()
	s.flags = SYN | FIN | ECE
	var p Packet
	mustParse(t, &p, s.frame(t), false)
	if p.SrcIP() != s.src || p.DstIP() != s.dst || p.SrcPort() != s.sport || p.DstPort() != s.dport {
		t.Errorf("addresses %v:%d > %v:%d", p.SrcIP(), p.SrcPort(), p.DstIP(), p.DstPort())
	}
	if p.Seq() != Seq(s.seq) || p.Ack() != Seq(s.ack) || p.Flags() != s.flags || p.Window() != s.window {
		t.Errorf("seq %#x ack %#x flags %#x win %d", p.Seq(), p.Ack(), p.Flags(), p.Window())
	}
	if !bytes.Equal(p.Payload(), s.payload) {
		t.Errorf("payload %q", p.Payload())
	}
	if got := p.SegLen(); got != uint32(len(s.payload))+2 {
		t.Errorf("SegLen %d", got)
	}
}

func TestParseReject(t *testing.T) {
	base := func(t *testing.T) []byte { return baseSeg().frame(t) }
	edit := func(fn func(f []byte)) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			f := base(t)
			fn(f)
			fixIP(f)
			return f
		}
	}
	opts := func(raw ...byte) func(t *testing.T) []byte {
		return func(t *testing.T) []byte { return baseSeg().rawOpts(t, raw) }
	}
	cases := []struct {
		name   string
		frame  func(t *testing.T) []byte
		verify bool
		want   Reason
	}{
		{"empty", func(*testing.T) []byte { return nil }, false, ReasonShort},
		{"53 bytes", func(t *testing.T) []byte { return base(t)[:53] }, false, ReasonShort},
		{"ethertype ipv6", func(t *testing.T) []byte {
			f := base(t)
			f[12], f[13] = 0x86, 0xdd
			return f
		}, false, ReasonNotIPv4},
		{"ethertype vlan", func(t *testing.T) []byte {
			f := base(t)
			f[12], f[13] = 0x81, 0x00
			return f
		}, false, ReasonNotIPv4},
		{"ip version 6", edit(func(f []byte) { f[14] = 0x65 }), false, ReasonNotIPv4},
		{"ihl 4", edit(func(f []byte) { f[14] = 0x44 }), false, ReasonBadIHL},
		{"ihl 0", edit(func(f []byte) { f[14] = 0x40 }), false, ReasonBadIHL},
		{"ihl beyond frame", func(t *testing.T) []byte {
			s := baseSeg()
			s.payload = nil
			f := s.frame(t)
			f[14] = 0x4f // 60-byte header in a 54-byte frame
			return f
		}, false, ReasonBadIHL},
		{"total length below ip header", edit(func(f []byte) { binary.BigEndian.PutUint16(f[16:], 19) }), false, ReasonBadLength},
		{"total length beyond capture", edit(func(f []byte) {
			binary.BigEndian.PutUint16(f[16:], uint16(len(f)-14+1))
		}), false, ReasonBadLength},
		{"total length leaves no tcp header", edit(func(f []byte) { binary.BigEndian.PutUint16(f[16:], 39) }), false, ReasonBadLength},
		{"more fragments", edit(func(f []byte) { f[20] |= 0x20 }), false, ReasonFragment},
		{"fragment offset", edit(func(f []byte) { f[21] = 1 }), false, ReasonFragment},
		{"fragment offset high bits", edit(func(f []byte) { f[20] = 0x10 }), false, ReasonFragment},
		{"udp", edit(func(f []byte) { f[23] = 17 }), false, ReasonNotTCP},
		{"icmp", edit(func(f []byte) { f[23] = 1 }), false, ReasonNotTCP},
		{"data offset 4", edit(func(f []byte) { f[46] = 0x40 }), false, ReasonBadDataOffset},
		{"data offset 0", edit(func(f []byte) { f[46] = 0x00 }), false, ReasonBadDataOffset},
		{"data offset beyond ip payload", func(t *testing.T) []byte {
			s := baseSeg()
			s.payload = nil
			f := s.frame(t)
			f[46] = 0x60
			return f
		}, false, ReasonBadDataOffset},
		{"data offset beyond total length, padding present", func(t *testing.T) []byte {
			s := baseSeg()
			s.payload = nil
			f := append(s.frame(t), 0, 0, 0, 0, 0, 0)
			f[46] = 0x60
			return f
		}, false, ReasonBadDataOffset},
		{"option length 0", opts(30, 0, 0, 0), false, ReasonBadOption},
		{"option length 1", opts(30, 1, 0, 0), false, ReasonBadOption},
		{"option runs past header", opts(1, 1, 30, 3), false, ReasonBadOption},
		{"option kind without length", opts(1, 1, 1, 30), false, ReasonBadOption},
		{"mss length 3", opts(2, 3, 5, 1), false, ReasonBadOption},
		{"window scale length 4", opts(3, 4, 1, 1), false, ReasonBadOption},
		{"sack-permitted length 3", opts(4, 3, 0, 1), false, ReasonBadOption},
		{"timestamps length 8", opts(8, 8, 0, 0, 0, 0, 0, 0), false, ReasonBadOption},
		{"sack length 11", opts(5, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1), false, ReasonBadOption},
		{"sack length 2", opts(5, 2, 1, 1), false, ReasonBadOption},
		{"mss twice", opts(2, 4, 5, 180, 2, 4, 5, 180), false, ReasonBadOption},
		{"sack twice", opts(5, 10, 0, 0, 0, 1, 0, 0, 0, 2, 5, 10, 0, 0, 0, 3, 0, 0, 0, 4), false, ReasonBadOption},
		{"sack past header", opts(1, 1, 5, 18, 0, 0, 0, 0, 0, 0, 0, 0), false, ReasonBadOption},
		{"bad tcp checksum", func(t *testing.T) []byte {
			f := base(t)
			f[len(f)-1] ^= 1
			return f
		}, true, ReasonBadChecksum},
		{"bad ip checksum", func(t *testing.T) []byte {
			f := base(t)
			f[24] ^= 1
			return f
		}, true, ReasonBadChecksum},
		{"padding not summed but bad payload is", func(t *testing.T) []byte {
			f := append(base(t), 0xde, 0xad)
			f[len(f)-3] ^= 0x10
			return f
		}, true, ReasonBadChecksum},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var p Packet
			mustParse(t, &p, base(t), false)
			if got := p.Parse(c.frame(t), false, c.verify); got != c.want {
				t.Fatalf("Parse = %v, want %v", got, c.want)
			}
			if p.Frame() != nil {
				t.Error("rejected frame left a view behind")
			}
		})
	}
}

func TestParseVerifyPaddedValid(t *testing.T) {
	f := append(baseSeg().frame(t), 0xde, 0xad, 0xbe, 0xef)
	var p Packet
	if r := p.Parse(f, false, true); r != OK {
		t.Fatalf("Parse = %v", r)
	}
}

// TestSetters runs every rewrite on several packet shapes, with a full and
// with a partial input checksum. Every output is re-decoded by gopacket and
// its checksums verified independently; the two paths must give identical
// bytes.
func TestSetters(t *testing.T) {
	shapes := map[string]func() seg{
		"data": baseSeg,
		"ts+sack": func() seg {
			s := baseSeg()
			s.opts = []layers.TCPOption{nopOpt(), nopOpt(), optTSOpt(0xFFFFFFFE, 0x01020304), nopOpt(), nopOpt(),
				optSACKOpt(0xFFFFFFF0, 0x00000010, 0x100, 0x200, 0x300, 0x400)}
			return s
		},
		"unaligned options, ip options, odd payload": func() seg {
			s := baseSeg()
			s.ipOpts = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 1}}
			s.opts = []layers.TCPOption{nopOpt(), optMSSOpt(1400), optTSOpt(7, 8), optSACKOpt(0xFFFFFFFF, 5, 6, 7), nopOpt(), optWSOpt(3)}
			s.payload = []byte("odd!!")
			return s
		},
		"syn": func() seg {
			s := baseSeg()
			s.flags = SYN
			s.payload = nil
			s.opts = []layers.TCPOption{optMSSOpt(1460), optSACKPermOpt(), optTSOpt(1, 0), nopOpt(), optWSOpt(7)}
			return s
		},
	}
	type check func(t *testing.T, d decoded, p *Packet)
	cases := []struct {
		name  string
		apply func(p *Packet)
		check check
	}{
		{"none", func(p *Packet) {}, func(t *testing.T, d decoded, p *Packet) {}},
		{"SetSrcIP", func(p *Packet) { p.SetSrcIP(vip) }, func(t *testing.T, d decoded, p *Packet) {
			if [4]byte(d.ip.SrcIP.To4()) != vip {
				t.Errorf("src %v", d.ip.SrcIP)
			}
		}},
		{"SetDstIP", func(p *Packet) { p.SetDstIP(backupIP) }, func(t *testing.T, d decoded, p *Packet) {
			if [4]byte(d.ip.DstIP.To4()) != backupIP {
				t.Errorf("dst %v", d.ip.DstIP)
			}
		}},
		{"SetDstIP zero and ones", func(p *Packet) { p.SetSrcIP([4]byte{255, 255, 255, 255}); p.SetDstIP([4]byte{}) },
			func(t *testing.T, d decoded, p *Packet) {
				if [4]byte(d.ip.DstIP.To4()) != [4]byte{} || [4]byte(d.ip.SrcIP.To4()) != [4]byte{255, 255, 255, 255} {
					t.Errorf("src %v dst %v", d.ip.SrcIP, d.ip.DstIP)
				}
			}},
		{"SetSeq wraps", func(p *Packet) { p.SetSeq(Seq(0xFFFFFFF0).Add(0x20)) }, func(t *testing.T, d decoded, p *Packet) {
			if d.tcp.Seq != 0x10 {
				t.Errorf("seq %#x", d.tcp.Seq)
			}
		}},
		{"SetSeq max", func(p *Packet) { p.SetSeq(0xFFFFFFFF) }, func(t *testing.T, d decoded, p *Packet) {
			if d.tcp.Seq != 0xFFFFFFFF {
				t.Errorf("seq %#x", d.tcp.Seq)
			}
		}},
		{"SetAck", func(p *Packet) { p.SetAck(0xFFFFFFF8) }, func(t *testing.T, d decoded, p *Packet) {
			if d.tcp.Ack != 0xFFFFFFF8 {
				t.Errorf("ack %#x", d.tcp.Ack)
			}
		}},
		{"SetAck zero", func(p *Packet) { p.SetAck(0) }, func(t *testing.T, d decoded, p *Packet) {
			if d.tcp.Ack != 0 {
				t.Errorf("ack %#x", d.tcp.Ack)
			}
		}},
		{"SetFlags", func(p *Packet) { p.SetFlags(RST | ACK) }, func(t *testing.T, d decoded, p *Packet) {
			if d.flags() != RST|ACK {
				t.Errorf("flags %#x", d.flags())
			}
			if int(d.tcp.DataOffset)*4 != int(p.payload-p.tcp) {
				t.Errorf("data offset %d changed", d.tcp.DataOffset)
			}
		}},
		{"SetWindow", func(p *Packet) { p.SetWindow(0xffff) }, func(t *testing.T, d decoded, p *Packet) {
			if d.tcp.Window != 0xffff {
				t.Errorf("window %d", d.tcp.Window)
			}
		}},
		{"SetMSS", func(p *Packet) { p.SetMSS(1380) }, func(t *testing.T, d decoded, p *Packet) {
			o, ok := d.opt(layers.TCPOptionKindMSS)
			if _, has := p.MSS(); has != ok || ok && binary.BigEndian.Uint16(o) != 1380 {
				t.Errorf("MSS option %x %v", o, ok)
			}
		}},
		{"SetTimestamps", func(p *Packet) { p.SetTimestamps(uint32(Seq(0xFFFFFFF0).Add(0x20)), 0xDEADBEEF) }, func(t *testing.T, d decoded, p *Packet) {
			o, ok := d.opt(layers.TCPOptionKindTimestamps)
			if _, _, has := p.Timestamps(); has != ok || ok && (binary.BigEndian.Uint32(o) != 0x10 || binary.BigEndian.Uint32(o[4:]) != 0xDEADBEEF) {
				t.Errorf("TS option %x %v", o, ok)
			}
		}},
		{"SetSACKBlock all, wrapping", func(p *Packet) {
			for i := range p.NumSACK() {
				l, r := p.SACKBlock(i)
				p.SetSACKBlock(i, l.Add(0x20), r.Add(0x20))
			}
			p.SetSACKBlock(p.NumSACK(), 1, 2) // ignored
			p.SetSACKBlock(-1, 1, 2)          // ignored
		}, func(t *testing.T, d decoded, p *Packet) {
			o, ok := d.opt(layers.TCPOptionKindSACK)
			if ok != (p.NumSACK() > 0) || len(o) != 8*p.NumSACK() {
				t.Fatalf("SACK option %x", o)
			}
			for i := range p.NumSACK() {
				l, r := p.SACKBlock(i)
				if Seq(binary.BigEndian.Uint32(o[8*i:])) != l || Seq(binary.BigEndian.Uint32(o[8*i+4:])) != r {
					t.Errorf("block %d: %x", i, o[8*i:8*i+8])
				}
			}
			if p.NumSACK() > 0 {
				if l, _ := p.SACKBlock(0); l != 0x10 && l != 0x1f { // from 0xFFFFFFF0 or 0xFFFFFFFF
					t.Errorf("first left edge %#x, want it wrapped", l)
				}
			}
		}},
		{"TruncateSACK 1", func(p *Packet) { p.TruncateSACK(1) }, func(t *testing.T, d decoded, p *Packet) {
			o, ok := d.opt(layers.TCPOptionKindSACK)
			if p.NumSACK() > 1 {
				t.Fatalf("NumSACK %d", p.NumSACK())
			}
			if ok && len(o) != 8 {
				t.Errorf("SACK option %x", o)
			}
			if int(d.tcp.DataOffset)*4 != int(p.payload-p.tcp) {
				t.Errorf("data offset changed")
			}
		}},
		{"TruncateSACK 0", func(p *Packet) { p.TruncateSACK(0) }, func(t *testing.T, d decoded, p *Packet) {
			if _, ok := d.opt(layers.TCPOptionKindSACK); ok || p.NumSACK() != 0 {
				t.Errorf("SACK option still present")
			}
			if _, _, ok := p.Timestamps(); ok {
				if _, ok := d.opt(layers.TCPOptionKindTimestamps); !ok {
					t.Errorf("timestamps lost")
				}
			}
		}},
		{"TrimPayload 3", func(p *Packet) { p.TrimPayload(3) }, func(t *testing.T, d decoded, p *Packet) {
			want := min(3, p.PayloadLen())
			if len(d.tcp.Payload) != want || p.PayloadLen() != want || int(d.ip.Length) != len(p.Frame())-EthLen {
				t.Errorf("payload %d, ip length %d, frame %d", len(d.tcp.Payload), d.ip.Length, len(p.Frame()))
			}
			if !bytes.Equal(d.tcp.Payload, []byte("GET")[:want]) && !bytes.Equal(d.tcp.Payload, []byte("odd")[:want]) {
				t.Errorf("payload %q", d.tcp.Payload)
			}
		}},
		{"TrimPayload 0", func(p *Packet) { p.TrimPayload(0) }, func(t *testing.T, d decoded, p *Packet) {
			if len(d.tcp.Payload) != 0 {
				t.Errorf("payload %q", d.tcp.Payload)
			}
		}},
		{"everything", func(p *Packet) {
			p.SetSrcIP(vip)
			p.SetDstIP(primaryIP)
			p.SetSeq(0xFFFFFFFF)
			p.SetAck(0x00000005)
			p.SetFlags(ACK | FIN)
			p.SetWindow(1)
			p.SetMSS(536)
			p.SetTimestamps(1, 0xFFFFFFFF)
			if p.NumSACK() > 0 {
				p.SetSACKBlock(0, 0xFFFFFFFA, 0x6)
			}
			p.TruncateSACK(1)
			p.TrimPayload(1)
		}, func(t *testing.T, d decoded, p *Packet) {
			// A trimmed segment's FIN went with the cut tail.
			if d.tcp.Seq != 0xFFFFFFFF || d.tcp.Ack != 5 || d.flags() != ACK|FIN && p.PayloadLen() < 1 || d.flags() != ACK && p.PayloadLen() == 1 || d.tcp.Window != 1 {
				t.Errorf("fields %#x %#x %#x %d", d.tcp.Seq, d.tcp.Ack, d.flags(), d.tcp.Window)
			}
			if [4]byte(d.ip.DstIP.To4()) != primaryIP || [4]byte(d.ip.SrcIP.To4()) != vip {
				t.Errorf("addresses %v %v", d.ip.SrcIP, d.ip.DstIP)
			}
			if o, ok := d.opt(layers.TCPOptionKindSACK); ok && (len(o) != 8 || binary.BigEndian.Uint32(o) != 0xFFFFFFFA) {
				t.Errorf("SACK %x", o)
			}
		}},
	}
	for shapeName, shape := range shapes {
		for _, c := range cases {
			t.Run(shapeName+"/"+c.name, func(t *testing.T) {
				var out [2][]byte
				for i, partial := range []bool{false, true} {
					f := shape().frame(t)
					if partial {
						makePartial(f)
					}
					var p Packet
					mustParse(t, &p, f, partial)
					c.apply(&p)
					if !partial && !p.VerifyChecksums() {
						t.Errorf("VerifyChecksums false before Finish on full-checksum input")
					}
					p.Finish()
					if !p.VerifyChecksums() {
						t.Errorf("partial=%v: VerifyChecksums false after Finish", partial)
					}
					d := decode(t, p.Frame())
					c.check(t, d, &p)
					// The rewritten frame parses again to the same view.
					var q Packet
					if r := q.Parse(p.Frame(), false, true); r != OK {
						t.Fatalf("re-Parse = %v", r)
					}
					if !sameView(&q, &p) {
						t.Errorf("re-Parse view %+v, want %+v", q, p)
					}
					out[i] = p.Frame()
				}
				if !bytes.Equal(out[0], out[1]) {
					t.Errorf("full and partial paths differ:\n%x\n%x", out[0], out[1])
				}
			})
		}
	}
}

// TestPartialFinish: the checksum field of a CHECKSUM_PARTIAL frame holds
// only the pseudo-header sum; Finish makes it valid even with no rewrite.
func TestPartialFinish(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 1448} {
		s := baseSeg()
		s.payload = bytes.Repeat([]byte{0xa5, 0x5a, 0xff}, 500)[:n]
		f := s.frame(t)
		want := append([]byte(nil), f[:EthLen+40+n]...) // gopacket pads short frames
		makePartial(f)
		var p Packet
		mustParse(t, &p, f, true)
		if p.VerifyChecksums() {
			t.Fatalf("partial frame verifies before Finish")
		}
		p.Finish()
		decode(t, p.Frame())
		if !bytes.Equal(p.Frame(), want) {
			t.Errorf("len %d: Finish gave %x, gopacket %x", n, p.Frame()[34:54], want[34:54])
		}
		p.Finish() // second call is a no-op
		decode(t, p.Frame())
	}
}

func TestCopyTo(t *testing.T) {
	s := baseSeg()
	s.opts = []layers.TCPOption{nopOpt(), nopOpt(), optTSOpt(1, 2), nopOpt(), nopOpt(), optSACKOpt(1, 2)}
	f := append(s.frame(t), 0, 0) // padding must not be copied
	var p, q Packet
	mustParse(t, &p, f, false)
	if p.CopyTo(make([]byte, len(p.Frame())-1), &q) {
		t.Fatal("CopyTo into a short buffer succeeded")
	}
	buf := make([]byte, 1600)
	if !p.CopyTo(buf, &q) {
		t.Fatal("CopyTo failed")
	}
	if !bytes.Equal(q.Frame(), p.Frame()) || &q.Frame()[0] != &buf[0] {
		t.Fatal("copy differs or does not live in buf")
	}
	q.SetDstIP(backupIP)
	q.SetSACKBlock(0, 10, 20)
	q.Finish()
	decode(t, q.Frame())
	if p.DstIP() != vip {
		t.Error("rewriting the copy changed the original")
	}
	if l, r := q.SACKBlock(0); l != 10 || r != 20 {
		t.Errorf("copy SACK %d %d", l, r)
	}
}

func TestBuild(t *testing.T) {
	mac1, mac2 := [6]byte{2, 0, 0, 0, 0, 1}, [6]byte{2, 0, 0, 0, 0, 2}
	cases := []struct {
		name     string
		spec     Spec
		optBytes []byte // expected options area
	}{
		{"syn-ack all options", Spec{
			SrcMAC: mac1, DstMAC: mac2, Src: vip, Dst: clientIP, SrcPort: 80, DstPort: 40000,
			Seq: 0xFFFFFFFF, Ack: 0xFFFFFFF1, Flags: SYN | ACK, Window: 65160,
			MSS: 1460, WScale: 7, SACKPermitted: true, HasTS: true, TSval: 0xFFFFFFFE, TSecr: 42,
		}, []byte{2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 42, 1, 3, 3, 7}},
		{"syn-ack mss and sack-permitted only", Spec{
			Src: vip, Dst: clientIP, SrcPort: 80, DstPort: 40000, Flags: SYN | ACK,
			MSS: 536, WScale: -1, SACKPermitted: true,
		}, []byte{2, 4, 0x02, 0x18, 1, 1, 4, 2}},
		{"syn-ack wscale 0", Spec{
			Src: vip, Dst: clientIP, SrcPort: 80, DstPort: 40000, Flags: SYN | ACK, WScale: 0,
		}, []byte{1, 3, 3, 0}},
		{"pure ack with ts", Spec{
			SrcMAC: mac1, DstMAC: mac2, Src: vip, Dst: backupIP, SrcPort: 40000, DstPort: 80,
			Seq: 0x10, Ack: 0xFFFFFFF0, Flags: ACK, Window: 502, WScale: -1, HasTS: true, TSval: 9, TSecr: 0xFFFFFFFF, TTL: 5,
		}, []byte{1, 1, 8, 10, 0, 0, 0, 9, 0xff, 0xff, 0xff, 0xff}},
		{"ack with ts and three sack blocks", Spec{
			Src: vip, Dst: clientIP, SrcPort: 80, DstPort: 40000, Seq: 7, Ack: 0xFFFFFFF0, Flags: ACK, Window: 500,
			WScale: -1, HasTS: true, TSval: 1, TSecr: 2,
			SACK: [][2]Seq{{0xFFFFFFF8, 8}, {100, 200}, {300, 400}, {500, 600}}, // the fourth has no room
		}, []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1, 5, 26,
			0xff, 0xff, 0xff, 0xf8, 0, 0, 0, 8, 0, 0, 0, 100, 0, 0, 0, 200, 0, 0, 1, 0x2c, 0, 0, 1, 0x90}},
		{"ack with four sack blocks", Spec{
			Src: vip, Dst: clientIP, SrcPort: 80, DstPort: 40000, Ack: 1, Flags: ACK, WScale: -1,
			SACK: [][2]Seq{{2, 3}, {4, 5}, {6, 7}, {8, 9}},
		}, []byte{1, 1, 5, 34, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0, 7, 0, 0, 0, 8, 0, 0, 0, 9}},
		{"rst without options", Spec{
			Src: vip, Dst: primaryIP, SrcPort: 40000, DstPort: 80, Seq: 0xFFFFFFFF, Flags: RST, WScale: -1,
		}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			buf := make([]byte, BuildMin)
			for i := range buf {
				buf[i] = 0xcc // stale bytes must not leak into the frame
			}
			var p Packet
			n := Build(buf, &c.spec, &p)
			if n != EthLen+20+20+len(c.optBytes) || len(p.Frame()) != n {
				t.Fatalf("Build = %d, frame %d", n, len(p.Frame()))
			}
			if got := buf[54:n]; !bytes.Equal(got, c.optBytes) {
				t.Errorf("options % x, want % x", got, c.optBytes)
			}
			d := decode(t, buf[:n])
			s := c.spec
			ttl := s.TTL
			if ttl == 0 {
				ttl = 64
			}
			if d.ip.TTL != ttl || d.ip.Flags != layers.IPv4DontFragment || d.ip.IHL != 5 || d.ip.TOS != 0 {
				t.Errorf("ip ttl %d flags %v ihl %d", d.ip.TTL, d.ip.Flags, d.ip.IHL)
			}
			if [4]byte(d.ip.SrcIP.To4()) != s.Src || [4]byte(d.ip.DstIP.To4()) != s.Dst {
				t.Errorf("addresses %v %v", d.ip.SrcIP, d.ip.DstIP)
			}
			if uint16(d.tcp.SrcPort) != s.SrcPort || uint16(d.tcp.DstPort) != s.DstPort ||
				Seq(d.tcp.Seq) != s.Seq || Seq(d.tcp.Ack) != s.Ack || d.flags() != s.Flags ||
				d.tcp.Window != s.Window || d.tcp.Urgent != 0 {
				t.Errorf("tcp %+v", d.tcp)
			}
			if !bytes.Equal(buf[0:6], s.DstMAC[:]) || !bytes.Equal(buf[6:12], s.SrcMAC[:]) || buf[12] != 8 || buf[13] != 0 {
				t.Errorf("ethernet % x", buf[:14])
			}
			// Options as gopacket decodes them, and as the view reports them.
			mss, hasMSS := d.opt(layers.TCPOptionKindMSS)
			if hasMSS != (s.MSS != 0) || hasMSS && binary.BigEndian.Uint16(mss) != s.MSS {
				t.Errorf("MSS %x", mss)
			}
			if v, ok := p.MSS(); ok != (s.MSS != 0) || v != s.MSS {
				t.Errorf("view MSS %d %v", v, ok)
			}
			ws, hasWS := d.opt(layers.TCPOptionKindWindowScale)
			if hasWS != (s.WScale >= 0) || hasWS && ws[0] != byte(s.WScale) {
				t.Errorf("WS %x", ws)
			}
			if _, ok := d.opt(layers.TCPOptionKindSACKPermitted); ok != s.SACKPermitted || p.SACKPermitted() != s.SACKPermitted {
				t.Errorf("SACK-permitted %v", ok)
			}
			ts, hasTS := d.opt(layers.TCPOptionKindTimestamps)
			if hasTS != s.HasTS || hasTS && (binary.BigEndian.Uint32(ts) != s.TSval || binary.BigEndian.Uint32(ts[4:]) != s.TSecr) {
				t.Errorf("TS %x", ts)
			}
			if v, e, ok := p.Timestamps(); ok != s.HasTS || v != s.TSval || e != s.TSecr {
				t.Errorf("view TS %d %d %v", v, e, ok)
			}
			wantSACK := min(len(s.SACK), MaxSACK)
			if s.HasTS {
				wantSACK = min(len(s.SACK), 3)
			}
			if p.NumSACK() != wantSACK {
				t.Errorf("view: %d SACK blocks, want %d", p.NumSACK(), wantSACK)
			}
			for j := 0; j < p.NumSACK(); j++ {
				if l, r := p.SACKBlock(j); l != s.SACK[j][0] || r != s.SACK[j][1] {
					t.Errorf("view SACK block %d: %d-%d, want %d-%d", j, l, r, s.SACK[j][0], s.SACK[j][1])
				}
			}
			// The built view is usable for further rewrites.
			p.SetAck(p.Ack().Add(1))
			p.Finish()
			decode(t, p.Frame())
		})
	}
	var p Packet
	if n := Build(make([]byte, BuildMin-1), &Spec{}, &p); n != 0 {
		t.Errorf("Build into short buffer = %d", n)
	}
}

func TestSeq(t *testing.T) {
	cases := []struct {
		a, b     Seq
		less, le bool
		sub      int32
	}{
		{1, 2, true, true, -1},
		{2, 1, false, false, 1},
		{5, 5, false, true, 0},
		{0xFFFFFFF0, 0x10, true, true, -0x20},
		{0x10, 0xFFFFFFF0, false, false, 0x20},
		{0xFFFFFFFF, 0, true, true, -1},
		{0, 0xFFFFFFFF, false, false, 1},
		{0x7FFFFFFF, 0, false, false, 0x7FFFFFFF},
	}
	for _, c := range cases {
		if got := c.a.LessThan(c.b); got != c.less {
			t.Errorf("%#x.LessThan(%#x) = %v", c.a, c.b, got)
		}
		if got := c.a.LessEq(c.b); got != c.le {
			t.Errorf("%#x.LessEq(%#x) = %v", c.a, c.b, got)
		}
		if got := c.a.Sub(c.b); got != c.sub {
			t.Errorf("%#x.Sub(%#x) = %d", c.a, c.b, got)
		}
		wantMax, wantMin := c.a, c.b
		if c.less {
			wantMax, wantMin = c.b, c.a
		}
		if SeqMax(c.a, c.b) != wantMax || SeqMin(c.a, c.b) != wantMin {
			t.Errorf("SeqMax/SeqMin(%#x, %#x) = %#x, %#x", c.a, c.b, SeqMax(c.a, c.b), SeqMin(c.a, c.b))
		}
		if TSLess(uint32(c.a), uint32(c.b)) != c.less {
			t.Errorf("TSLess(%#x, %#x)", c.a, c.b)
		}
	}
	if got := Seq(0xFFFFFFF0).Add(0x20); got != 0x10 {
		t.Errorf("Add wrapped to %#x", got)
	}
	win := []struct {
		s, first Seq
		size     uint32
		in       bool
	}{
		{0x5, 0xFFFFFFF0, 0x20, true},
		{0xFFFFFFF0, 0xFFFFFFF0, 0x20, true},
		{0x10, 0xFFFFFFF0, 0x20, false}, // right edge excluded
		{0xFFFFFFEF, 0xFFFFFFF0, 0x20, false},
		{0x0, 0x0, 0, false},
	}
	for _, w := range win {
		if got := w.s.InWindow(w.first, w.size); got != w.in {
			t.Errorf("%#x.InWindow(%#x, %#x) = %v", w.s, w.first, w.size, got)
		}
	}
}

// sameView compares two views: same bytes and same recorded offsets.
func sameView(a, b *Packet) bool {
	type offsets struct {
		tcp, payload, mss, ws, sackPerm, ts, sack, nsack uint8
		partial                                          bool
	}
	o := func(p *Packet) offsets {
		return offsets{p.tcp, p.payload, p.mss, p.ws, p.sackPerm, p.ts, p.sack, p.nsack, p.csumPartial}
	}
	return o(a) == o(b) && bytes.Equal(a.frame, b.frame)
}

// TestVerifyDetectsCorruption guards the checks the other tests rely on:
// a single flipped bit anywhere past the Ethernet header is caught.
func TestVerifyDetectsCorruption(t *testing.T) {
	s := baseSeg()
	s.opts = []layers.TCPOption{nopOpt(), nopOpt(), optTSOpt(1, 2)}
	f := s.frame(t)
	var p Packet
	mustParse(t, &p, f, false)
	n := len(p.Frame())
	for i := EthLen; i < n; i++ {
		for bit := range 8 {
			g := append([]byte(nil), f[:n]...)
			g[i] ^= 1 << bit
			var q Packet
			if q.Parse(g, false, false) != OK {
				continue // a length or option field no longer parses
			}
			ipOK, tcpOK := refVerify(g)
			if q.VerifyChecksums() || ipOK && tcpOK {
				t.Fatalf("flip byte %d bit %d not detected", i, bit)
			}
		}
	}
}

// TestTrimPayloadFlags: FIN and PSH belong after a segment's last byte, so
// a trim moves them to the cut tail; a trim that cuts nothing keeps them.
func TestTrimPayloadFlags(t *testing.T) {
	tests := []struct {
		name  string
		flags uint8
		trim  int
		want  uint8
	}{
		{"FIN and PSH cut off", ACK | PSH | FIN, 3, ACK},
		{"FIN cut off", ACK | FIN, 0, ACK},
		{"nothing cut", ACK | PSH | FIN, 27, ACK | PSH | FIN},
		{"no FIN", ACK, 3, ACK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := baseSeg()
			s.flags = tc.flags
			var p Packet
			mustParse(t, &p, s.frame(t), false)
			p.TrimPayload(tc.trim)
			p.Finish()
			d := decode(t, p.Frame())
			if d.flags() != tc.want || len(d.tcp.Payload) != min(tc.trim, len(s.payload)) {
				t.Fatalf("flags %#x payload %d, want %#x and %d", d.flags(), len(d.tcp.Payload), tc.want, min(tc.trim, len(s.payload)))
			}
			if i, c := refVerify(p.Frame()); !i || !c {
				t.Fatalf("checksums invalid: ip %v tcp %v", i, c)
			}
		})
	}
}

package rewrite

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/gopacket/gopacket/layers"
)

// completeLikeKernel finishes a partial TCP checksum as a device or the
// kernel's skb_checksum_help does: sum from CsumStart to the end, the field
// (holding the pseudo-header sum) included, and store the complement.
func completeLikeKernel(f []byte, o Offload) {
	c := int(o.CsumStart) + tcpCsum
	binary.BigEndian.PutUint16(f[c:], ^uint16(Checksum(f[o.CsumStart:], 0)))
}

// TestKeepOffloads: under KeepOffloads a partial checksum, or a
// super-frame's, stays partial through every rewrite, with the pseudo-header
// sum of the final addresses and length in its field, so that the kernel's
// completion yields a valid checksum; Offload describes it.
func TestKeepOffloads(t *testing.T) {
	big := bytes.Repeat([]byte{0xa5, 0x5a, 0xff, 0x01, 0x80}, 3000)[:4*1448+7]
	tests := []struct {
		name     string
		payload  []byte
		partial  bool // the kernel handed the frame up CHECKSUM_PARTIAL
		keep     bool // KeepOffloads called
		gso      uint16
		trim     int // TrimPayload(trim) when >= 0
		wantPart bool
		wantGSO  uint16
	}{
		{"partial frame", big[:1448], true, true, 0, -1, true, 0},
		{"partial super-frame", big, true, true, 1448, -1, true, 1448},
		{"super-frame trimmed to two segments", big, true, true, 1448, 1448 + 9, true, 1448},
		{"super-frame trimmed to one segment", big, true, true, 1448, 1000, true, 0},
		{"full-checksum super-frame goes partial", big, false, true, 1448, -1, true, 1448},
		{"full-checksum super-frame trimmed goes partial", big, false, true, 1448, 1448 + 9, true, 1448},
		{"full-checksum frame stays full", big[:100], false, true, 0, -1, false, 0},
		{"partial frame without KeepOffloads is completed", big[:1448], true, false, 0, -1, false, 0},
		{"empty partial ACK", nil, true, true, 0, -1, true, 0},
		{"partial super-frame with IP options", big, true, true, 1448, -1, true, 1448},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := baseSeg()
			s.payload = tc.payload
			s.opts = []layers.TCPOption{nopOpt(), nopOpt(), optTSOpt(7, 9)}
			ipLen := 20
			if strings.Contains(tc.name, "IP options") {
				s.ipOpts = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}
				ipLen = 24
			}
			f := s.frame(t)
			if tc.partial {
				makePartial(f)
			}
			var p Packet
			mustParse(t, &p, f, tc.partial)
			if tc.keep {
				p.KeepOffloads(tc.gso)
			}
			p.SetDstIP(backupIP)
			p.SetSrcIP(vip)
			p.SetSeq(p.Seq().Add(0x9000_0001))
			p.SetAck(p.Ack().Add(12345))
			p.SetWindow(77)
			p.SetTimestamps(0xdeadbeef, 0x01020304)
			if tc.trim >= 0 {
				p.TrimPayload(tc.trim)
			}
			p.Finish()
			o := p.Offload()
			if (o.CsumStart != 0) != tc.wantPart || o.GSOSize != tc.wantGSO {
				t.Fatalf("Offload() = %+v, want partial %v gso %d", o, tc.wantPart, tc.wantGSO)
			}
			if tc.wantPart {
				if o.CsumStart != uint16(EthLen+ipLen) || o.CsumOffset != 16 || o.HdrLen != uint16(EthLen+ipLen+32) {
					t.Fatalf("Offload() = %+v, want csum start %d, offset 16, header length %d", o, EthLen+ipLen, EthLen+ipLen+32)
				}
				seed := binary.BigEndian.Uint16(p.Frame()[int(o.CsumStart+o.CsumOffset):])
				if want := uint16(p.pseudoSum()); seed != want {
					t.Fatalf("checksum field %#04x, want the pseudo-header sum %#04x", seed, want)
				}
				completeLikeKernel(p.Frame(), o)
			}
			d := decode(t, p.Frame())
			if d.tcp.Window != 77 || [4]byte(d.ip.DstIP.To4()) != backupIP {
				t.Fatalf("decoded %+v", d.tcp)
			}
		})
	}
}

// TestOffloadECN: a super-frame whose first segment carries CWR asks the
// kernel to keep it on that segment only; a frame sent whole, or one without
// CWR, asks nothing of the kind.
func TestOffloadECN(t *testing.T) {
	payload := bytes.Repeat([]byte{7}, 3000)
	tests := []struct {
		name  string
		flags uint8
		gso   uint16
		want  bool
	}{
		{"super-frame with CWR", ACK | CWR, 1000, true},
		{"super-frame without CWR", ACK, 1000, false},
		{"plain frame with CWR", ACK | CWR, 0, false},
		{"super-frame of one segment with CWR", ACK | CWR, 3000, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := baseSeg()
			s.payload, s.flags = payload, tc.flags
			f := s.frame(t)
			makePartial(f)
			var p Packet
			mustParse(t, &p, f, true)
			p.KeepOffloads(tc.gso)
			p.Finish()
			if got := p.Offload().ECN; got != tc.want {
				t.Errorf("Offload().ECN = %v, want %v", got, tc.want)
			}
		})
	}
}

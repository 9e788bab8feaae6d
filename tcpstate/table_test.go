package tcpstate

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"understudy/rewrite"
)

var (
	clientIP  = [4]byte{192, 0, 2, 1}
	vip       = [4]byte{198, 51, 100, 100}
	primaryIP = [4]byte{10, 1, 0, 10}
	backupIP  = [4]byte{10, 1, 0, 11}
)

const (
	cport = 40000
	vport = 80
)

// bed drives one flow through a table and checks every emitted frame.
type bed struct {
	t    *testing.T
	tab  *Table
	out  *Output
	now  int64
	buf  []byte
	pkt  rewrite.Packet
	cISN rewrite.Seq
	pISN rewrite.Seq
	bISN rewrite.Seq
}

// newBed makes a table whose every client ACK is forwarded at once: these
// tests check what each segment makes. TestAckHold holds ACKs.
func newBed(t *testing.T, cISN, pISN, bISN rewrite.Seq) *bed {
	t.Helper()
	return newBedHolding(t, cISN, pISN, bISN, -1)
}

func newBedHolding(t *testing.T, cISN, pISN, bISN rewrite.Seq, hold time.Duration) *bed {
	t.Helper()
	tab := New(Config{
		Services: []Service{{VIP: vip, Port: vport}},
		Servers:  [2][4]byte{primaryIP, backupIP},
		AckHold:  hold,
	})
	return &bed{t: t, tab: tab, out: NewOutput(maxFrame + 64), buf: make([]byte, 2048), now: int64(time.Second),
		cISN: cISN, pISN: pISN, bISN: bISN}
}

// seg is one emitted frame, decoded independently of rewrite.
type seg struct {
	side    Side
	ip      *layers.IPv4
	tcp     *layers.TCP
	payload []byte
}

func (s seg) flags() string {
	var b bytes.Buffer
	for _, f := range []struct {
		on bool
		c  byte
	}{{s.tcp.SYN, 'S'}, {s.tcp.ACK, 'A'}, {s.tcp.FIN, 'F'}, {s.tcp.RST, 'R'}, {s.tcp.PSH, 'P'}} {
		if f.on {
			b.WriteByte(f.c)
		}
	}
	return b.String()
}

func (s seg) ts() (val, ecr uint32, ok bool) {
	for _, o := range s.tcp.Options {
		if o.OptionType == layers.TCPOptionKindTimestamps && len(o.OptionData) == 8 {
			d := o.OptionData
			return be32(d[0:4]), be32(d[4:8]), true
		}
	}
	return 0, 0, false
}

func (s seg) opt(kind layers.TCPOptionKind) ([]byte, bool) {
	for _, o := range s.tcp.Options {
		if o.OptionType == kind {
			return o.OptionData, true
		}
	}
	return nil, false
}

func be16(b []byte) uint16 {
	if len(b) < 2 {
		return 0
	}
	return uint16(b[0])<<8 | uint16(b[1])
}

func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// maxFrame is the largest frame an interface with a 1500-byte MTU sends.
const maxFrame = 1514

// decode re-decodes a frame with gopacket and checks both checksums by
// serialising the decoded layers again with checksums computed.
func decode(t *testing.T, o Out) seg {
	t.Helper()
	if len(o.Frame) > maxFrame {
		t.Fatalf("emitted a %d-byte frame: larger than the MTU allows", len(o.Frame))
	}
	pk := gopacket.NewPacket(o.Frame, layers.LayerTypeEthernet, gopacket.Default)
	ipL, _ := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	tcpL, _ := pk.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if ipL == nil || tcpL == nil {
		t.Fatalf("emitted frame does not decode as IPv4/TCP: %v", pk)
	}
	wantIP, wantTCP := ipL.Checksum, tcpL.Checksum
	ip2, tcp2 := *ipL, *tcpL
	if err := tcp2.SetNetworkLayerForChecksum(&ip2); err != nil {
		t.Fatal(err)
	}
	sb := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(sb, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: false},
		&ip2, &tcp2, gopacket.Payload(tcpL.Payload)); err != nil {
		t.Fatal(err)
	}
	re := gopacket.NewPacket(sb.Bytes(), layers.LayerTypeIPv4, gopacket.Default)
	gotIP := re.Layer(layers.LayerTypeIPv4).(*layers.IPv4).Checksum
	gotTCP := re.Layer(layers.LayerTypeTCP).(*layers.TCP).Checksum
	if gotIP != wantIP || gotTCP != wantTCP {
		t.Fatalf("bad checksums: ip %#04x want %#04x, tcp %#04x want %#04x", wantIP, gotIP, wantTCP, gotTCP)
	}
	if int(ipL.Length) != len(o.Frame)-rewrite.EthLen {
		t.Fatalf("IPv4 total length %d, frame carries %d", ipL.Length, len(o.Frame)-rewrite.EthLen)
	}
	return seg{side: o.Side, ip: ipL, tcp: tcpL, payload: tcpL.Payload}
}

func (b *bed) feed(fromClient bool, s rewrite.Spec, payload []byte) []seg {
	b.t.Helper()
	out := b.feedInBatch(fromClient, s, payload)
	// Each test segment is a batch of its own, as on an idle datapath.
	return append(out, b.flush()...)
}

// feedInBatch is feed for a segment in the middle of a datapath batch: what
// the table defers to the batch's end stays owed until flush.
func (b *bed) feedInBatch(fromClient bool, s rewrite.Spec, payload []byte) []seg {
	b.t.Helper()
	n := rewrite.Build(b.buf, &s, &b.pkt)
	if len(payload) > 0 {
		n = withPayload(b.t, b.buf, n, payload)
	}
	if r := b.pkt.Parse(b.buf[:n], false, true); r != rewrite.OK {
		b.t.Fatalf("test frame rejected: %v", r)
	}
	b.out.Reset()
	if fromClient {
		b.tab.HandleClient(b.now, &b.pkt, b.out)
	} else {
		b.tab.HandleServer(b.now, &b.pkt, b.out)
	}
	return b.collect()
}

// flush ends a batch.
func (b *bed) flush() []seg {
	b.out.Reset()
	b.tab.Flush(b.out)
	return b.collect()
}

func (b *bed) collect() []seg {
	var segs []seg
	for _, o := range b.out.Frames {
		segs = append(segs, decode(b.t, o))
	}
	return segs
}

func (b *bed) tick(d time.Duration) []seg {
	b.now += int64(d)
	b.out.Reset()
	b.tab.Tick(b.now, b.out)
	return b.collect()
}

// withPayload appends payload to a built frame and fixes lengths and
// checksums with gopacket, returning the new frame length.
func withPayload(t *testing.T, buf []byte, n int, payload []byte) int {
	t.Helper()
	pk := gopacket.NewPacket(buf[:n], layers.LayerTypeEthernet, gopacket.Default)
	eth := pk.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	tcp := pk.Layer(layers.LayerTypeTCP).(*layers.TCP)
	tcp.SetNetworkLayerForChecksum(ip)
	sb := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(sb, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true},
		eth, ip, tcp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return copy(buf, sb.Bytes())
}

// Specs for the three parties.
func (b *bed) fromClient(seq, ack rewrite.Seq, flags uint8, tsval, tsecr uint32) rewrite.Spec {
	return rewrite.Spec{Src: clientIP, Dst: vip, SrcPort: cport, DstPort: vport, Seq: seq, Ack: ack,
		Flags: flags, Window: 1000, WScale: -1, HasTS: true, TSval: tsval, TSecr: tsecr}
}

func (b *bed) fromServer(ip [4]byte, seq, ack rewrite.Seq, flags uint8, win uint16, tsval, tsecr uint32) rewrite.Spec {
	return rewrite.Spec{Src: ip, Dst: clientIP, SrcPort: vport, DstPort: cport, Seq: seq, Ack: ack,
		Flags: flags, Window: win, WScale: -1, HasTS: true, TSval: tsval, TSecr: tsecr}
}

const (
	cTS0 = 7000       // client's clock
	pTS0 = 0xFFFFFF00 // primary's clock, about to wrap
	bTS0 = 123456     // backup's clock
)

// handshake runs SYN, both SYN-ACKs and the client's ACK, checking each step.
// Client window scale 7; primary 7, backup 9.
func (b *bed) handshake() {
	t := b.t
	t.Helper()
	syn := b.fromClient(b.cISN, 0, rewrite.SYN|rewrite.ECE|rewrite.CWR, cTS0, 0)
	syn.MSS, syn.WScale, syn.SACKPermitted = 1460, 7, true
	out := b.feed(true, syn, nil)
	if len(out) != 2 {
		t.Fatalf("SYN: %d frames out, want one per server", len(out))
	}
	dsts := map[[4]byte]bool{}
	for _, s := range out {
		if s.side != ServerSide || s.flags() != "S" || s.tcp.ECE || s.tcp.CWR {
			t.Fatalf("SYN forwarded as %s side %d ece %v", s.flags(), s.side, s.tcp.ECE)
		}
		dsts[[4]byte(s.ip.DstIP.To4())] = true
		if [4]byte(s.ip.SrcIP.To4()) != clientIP {
			t.Fatalf("SYN source rewritten: %v", s.ip.SrcIP)
		}
	}
	if !dsts[primaryIP] || !dsts[backupIP] {
		t.Fatalf("SYN reached %v, want both servers", dsts)
	}
	sa := b.synAcks(9)
	if mss, _ := sa.opt(layers.TCPOptionKindMSS); len(mss) != 2 || int(mss[0])<<8|int(mss[1]) != 1400 {
		t.Fatalf("MSS announced %v, want the smaller 1400", mss)
	}
	if ws, _ := sa.opt(layers.TCPOptionKindWindowScale); len(ws) != 1 || ws[0] != 7 {
		t.Fatalf("window scale announced %v, want the primary's 7", ws)
	}
	if sa.tcp.Window != 64000 {
		t.Fatalf("SYN-ACK window %d, want the smaller 64000", sa.tcp.Window)
	}
	if v, e, ok := sa.ts(); !ok || v != pTS0 || e != cTS0 {
		t.Fatalf("SYN-ACK timestamps %d/%d, want %d/%d", v, e, uint32(pTS0), cTS0)
	}
	out = b.feed(true, b.fromClient(b.cISN+1, b.pISN+1, rewrite.ACK, cTS0+1, pTS0), nil)
	p, bk := b.split(out)
	if rewrite.Seq(p.tcp.Ack) != b.pISN+1 || rewrite.Seq(bk.tcp.Ack) != b.bISN+1 {
		t.Fatalf("handshake ACK: primary ack %d want %d, backup ack %d want %d", p.tcp.Ack, b.pISN+1, bk.tcp.Ack, b.bISN+1)
	}
	if _, e, _ := bk.ts(); e != bTS0 {
		t.Fatalf("backup's TSecr %d, want its own SYN-ACK TSval %d", e, bTS0)
	}
	if _, e, _ := p.ts(); e != pTS0 {
		t.Fatalf("primary's TSecr %d, want %d", e, uint32(pTS0))
	}
	if st := b.flow().State(); st != StateEstablished {
		t.Fatalf("state %v after handshake", st)
	}
}

// synAcks feeds the primary's SYN-ACK (MSS 1460, window scale 7), which must
// wait, then the backup's (MSS 1400, window scale bWS), and returns the
// client's SYN-ACK that releases, checked as the primary's.
func (b *bed) synAcks(bWS int8) seg {
	t := b.t
	t.Helper()
	psa := b.fromServer(primaryIP, b.pISN, b.cISN+1, rewrite.SYN|rewrite.ACK, 65160, pTS0, cTS0)
	psa.MSS, psa.WScale, psa.SACKPermitted = 1460, 7, true
	if out := b.feed(false, psa, nil); len(out) != 0 {
		t.Fatalf("primary SYN-ACK reached the client before the backup's: %d frames", len(out))
	}
	bsa := b.fromServer(backupIP, b.bISN, b.cISN+1, rewrite.SYN|rewrite.ACK, 64000, bTS0, cTS0)
	bsa.MSS, bsa.WScale, bsa.SACKPermitted = 1400, bWS, true
	out := b.feed(false, bsa, nil)
	if len(out) != 1 {
		t.Fatalf("backup SYN-ACK: %d frames, want the client's SYN-ACK", len(out))
	}
	sa := out[0]
	if sa.side != ClientSide || sa.flags() != "SA" || [4]byte(sa.ip.SrcIP.To4()) != vip ||
		rewrite.Seq(sa.tcp.Seq) != b.pISN || rewrite.Seq(sa.tcp.Ack) != b.cISN+1 {
		t.Fatalf("client SYN-ACK: %s from %v seq %d ack %d", sa.flags(), sa.ip.SrcIP, sa.tcp.Seq, sa.tcp.Ack)
	}
	return sa
}

// split expects one frame to each server and returns (primary, backup).
func (b *bed) split(out []seg) (p, bk seg) {
	b.t.Helper()
	if len(out) != 2 {
		b.t.Fatalf("%d frames out, want one per server", len(out))
	}
	for _, s := range out {
		switch [4]byte(s.ip.DstIP.To4()) {
		case primaryIP:
			p = s
		case backupIP:
			bk = s
		default:
			b.t.Fatalf("frame to %v", s.ip.DstIP)
		}
		if s.side != ServerSide {
			b.t.Fatalf("frame to a server on the client side")
		}
	}
	return p, bk
}

func (b *bed) flow() *Flow {
	return b.tab.Lookup(Key{Client: clientIP, CPort: cport, VIP: vip, VPort: vport})
}

// isns covers sequence numbers far from, near and across 2^32.
var isns = []struct {
	name             string
	cISN, pISN, bISN rewrite.Seq
}{
	{"low", 1000, 5000, 900000},
	{"client wraps", 0xFFFFFFF0, 3000000000, 12},
	{"primary wraps", 77, 0xFFFFFFF8, 0x7FFFFFFF},
	{"backup wraps", 0x80000000, 1, 0xFFFFFFFF},
}

func TestHandshakeGating(t *testing.T) {
	for _, tc := range isns {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t, tc.cISN, tc.pISN, tc.bISN)
			b.handshake()
			if f := b.flow(); f.Protection() != Protected {
				t.Fatalf("flow unprotected: %s", f.why)
			}
		})
	}
}

// TestSynAckTimeoutLeavesFlowUnprotected: a backup that never answers gets
// the client's SYN again at each SynAckWait, SynRetries times; then the
// client is answered and the flow goes on without the backup.
func TestSynAckTimeoutLeavesFlowUnprotected(t *testing.T) {
	b := newBed(t, 10, 20, 30)
	syn := b.fromClient(b.cISN, 0, rewrite.SYN, cTS0, 0)
	b.feed(true, syn, nil)
	psa := b.fromServer(primaryIP, b.pISN, b.cISN+1, rewrite.SYN|rewrite.ACK, 65160, pTS0, cTS0)
	if out := b.feed(false, psa, nil); len(out) != 0 {
		t.Fatal("SYN-ACK released without the backup's")
	}
	if out := b.tick(10 * time.Millisecond); len(out) != 0 {
		t.Fatal("SYN-ACK released before the bound")
	}
	for try := 1; try <= 2; try++ {
		out := b.tick(50 * time.Millisecond)
		if len(out) != 1 || out[0].side != ServerSide || out[0].flags() != "S" ||
			[4]byte(out[0].ip.DstIP.To4()) != backupIP || rewrite.Seq(out[0].tcp.Seq) != b.cISN {
			t.Fatalf("retry %d: %d frames, want the client's SYN to the backup: %+v", try, len(out), out)
		}
	}
	out := b.tick(50 * time.Millisecond)
	var sa, rst int
	for _, s := range out {
		switch {
		case s.side == ClientSide && s.flags() == "SA":
			sa++
		case s.side == ServerSide && s.flags() == "R" && [4]byte(s.ip.DstIP.To4()) == backupIP &&
			rewrite.Seq(s.tcp.Seq) == b.cISN+1:
			rst++
		}
	}
	if sa != 1 || rst != 1 {
		t.Fatalf("after the bound: %d SYN-ACKs to the client, %d RSTs to the backup; want 1 and 1", sa, rst)
	}
	st := &b.tab.Stats
	if f := b.flow(); f.Protection() != Unprotected || st.Counters[SynAckTimeouts] != 1 || st.Counters[SynRetries] != 2 {
		t.Fatalf("flow %v, timeouts %d, retries %d", f.Protection(), st.Counters[SynAckTimeouts], st.Counters[SynRetries])
	}
	// A late backup SYN-ACK no longer belongs to the flow: the backup is
	// told so again.
	bsa := b.fromServer(backupIP, b.bISN, b.cISN+1, rewrite.SYN|rewrite.ACK, 64000, bTS0, cTS0)
	if out := b.feed(false, bsa, nil); len(out) != 1 || out[0].side != ServerSide || out[0].flags() != "R" ||
		rewrite.Seq(out[0].tcp.Seq) != b.cISN+1 {
		t.Fatalf("late backup SYN-ACK produced %d frames, want its reset: %+v", len(out), out)
	}
}

func TestSynRetriesConfig(t *testing.T) {
	for _, tc := range []struct{ set, want int }{{0, 2}, {-1, -1}, {5, 5}, {1000, 255}} {
		if got := (Config{SynRetries: tc.set}).WithDefaults().SynRetries; got != tc.want {
			t.Errorf("SynRetries %d: %d after defaults, want %d", tc.set, got, tc.want)
		}
	}
}

// TestSynRetryKeepsProtection: the backup's SYN-ACK (or the SYN to it) was
// lost; the client's SYN, sent to the backup again with the options the
// client offered, draws the backup's SYN-ACK, and the flow stays protected.
func TestSynRetryKeepsProtection(t *testing.T) {
	for _, tc := range isns {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t, tc.cISN, tc.pISN, tc.bISN)
			syn := b.fromClient(b.cISN, 0, rewrite.SYN, cTS0, 0)
			syn.MSS, syn.WScale, syn.SACKPermitted, syn.Window = 1460, 7, true, 64240
			b.feed(true, syn, nil)
			psa := b.fromServer(primaryIP, b.pISN, b.cISN+1, rewrite.SYN|rewrite.ACK, 65160, pTS0, cTS0)
			psa.MSS, psa.WScale, psa.SACKPermitted = 1460, 7, true
			b.feed(false, psa, nil)
			out := b.tick(50 * time.Millisecond)
			if len(out) != 1 || out[0].flags() != "S" || [4]byte(out[0].ip.DstIP.To4()) != backupIP {
				t.Fatalf("%d frames at the bound, want the SYN to the backup: %+v", len(out), out)
			}
			r := out[0]
			if [4]byte(r.ip.SrcIP.To4()) != clientIP || uint16(r.tcp.SrcPort) != cport || uint16(r.tcp.DstPort) != vport ||
				rewrite.Seq(r.tcp.Seq) != b.cISN || r.tcp.Window != 64240 {
				t.Fatalf("SYN sent again: %v:%d -> :%d seq %d win %d", r.ip.SrcIP, r.tcp.SrcPort, r.tcp.DstPort, r.tcp.Seq, r.tcp.Window)
			}
			if m, ok := r.opt(layers.TCPOptionKindMSS); !ok || be16(m) != 1460 {
				t.Fatalf("MSS %v", m)
			}
			if w, ok := r.opt(layers.TCPOptionKindWindowScale); !ok || w[0] != 7 {
				t.Fatalf("window scale %v", w)
			}
			if _, ok := r.opt(layers.TCPOptionKindSACKPermitted); !ok {
				t.Fatal("SACK-permitted dropped")
			}
			if val, ecr, ok := r.ts(); !ok || val != cTS0 || ecr != 0 {
				t.Fatalf("timestamps %d %d %v", val, ecr, ok)
			}
			bsa := b.fromServer(backupIP, b.bISN, b.cISN+1, rewrite.SYN|rewrite.ACK, 64000, bTS0, cTS0)
			bsa.MSS, bsa.WScale, bsa.SACKPermitted = 1400, 7, true
			out = b.feed(false, bsa, nil)
			if len(out) != 1 || out[0].side != ClientSide || out[0].flags() != "SA" || rewrite.Seq(out[0].tcp.Seq) != b.pISN {
				t.Fatalf("backup's SYN-ACK after the retry: %d frames %+v", len(out), out)
			}
			if m, _ := out[0].opt(layers.TCPOptionKindMSS); be16(m) != 1400 {
				t.Fatalf("client offered MSS %d, want the smaller 1400", be16(m))
			}
			if f := b.flow(); f.Protection() != Protected {
				t.Fatalf("flow unprotected: %s", f.why)
			}
			if out := b.tick(time.Second); len(out) != 0 {
				t.Fatalf("%d frames after the handshake: a retry still pending", len(out))
			}
			st := &b.tab.Stats
			if st.Counters[SynRetries] != 1 || st.Counters[SynAckTimeouts] != 0 {
				t.Fatalf("retries %d, timeouts %d", st.Counters[SynRetries], st.Counters[SynAckTimeouts])
			}
		})
	}
}

// TestStaleServerConnection: a server that still holds an older connection
// on the 4-tuple answers the client's SYN with an ACK of that connection.
// The gateway resets the old connection at that ACK's number, as the
// client's kernel would, and sends the SYN again at once; the handshake then
// completes with both servers, whichever of them held it.
func TestStaleServerConnection(t *testing.T) {
	const oldSeq, oldAck = rewrite.Seq(0x5000), rewrite.Seq(0x9000)
	for _, tc := range []struct {
		name  string
		stale [][4]byte // servers answering the SYN with an old connection's ACK, in order
	}{
		{"primary", [][4]byte{primaryIP}},
		{"backup", [][4]byte{backupIP}},
		{"both", [][4]byte{backupIP, primaryIP}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t, 10, 20, 30)
			syn := b.fromClient(b.cISN, 0, rewrite.SYN, cTS0, 0)
			syn.MSS, syn.WScale, syn.SACKPermitted, syn.Window = 1460, 7, true, 64240
			b.feed(true, syn, nil)
			for _, ip := range tc.stale {
				out := b.feed(false, b.fromServer(ip, oldSeq, oldAck, rewrite.ACK, 500, 99, 98), nil)
				if len(out) != 2 {
					t.Fatalf("old connection's ACK from %v: %d frames, want a reset and the SYN: %+v", ip, len(out), out)
				}
				rst, again := out[0], out[1]
				if rst.side != ServerSide || [4]byte(rst.ip.DstIP.To4()) != ip || rst.flags() != "R" ||
					rewrite.Seq(rst.tcp.Seq) != oldAck || [4]byte(rst.ip.SrcIP.To4()) != clientIP ||
					uint16(rst.tcp.SrcPort) != cport || uint16(rst.tcp.DstPort) != vport {
					t.Fatalf("reset: %s to %v seq %d from %v:%d, want R to %v seq %d from the client",
						rst.flags(), rst.ip.DstIP, rst.tcp.Seq, rst.ip.SrcIP, rst.tcp.SrcPort, ip, oldAck)
				}
				if again.side != ServerSide || [4]byte(again.ip.DstIP.To4()) != ip || again.flags() != "S" ||
					rewrite.Seq(again.tcp.Seq) != b.cISN || again.tcp.Window != 64240 {
					t.Fatalf("after the reset: %s to %v seq %d win %d, want the client's SYN", again.flags(),
						again.ip.DstIP, again.tcp.Seq, again.tcp.Window)
				}
				if w, ok := again.opt(layers.TCPOptionKindWindowScale); !ok || w[0] != 7 {
					t.Fatalf("SYN sent again with window scale %v", w)
				}
			}
			// A segment without ACK is nobody's answer to the SYN.
			if out := b.feed(false, b.fromServer(tc.stale[0], oldSeq, 0, rewrite.FIN, 500, 99, 98), nil); len(out) != 0 {
				t.Fatalf("a FIN without ACK drew %d frames", len(out))
			}
			b.synAcks(7)
			if f := b.flow(); f.Protection() != Protected {
				t.Fatalf("flow unprotected: %s", f.why)
			}
			c := &b.tab.Stats.Counters
			if c[StaleConnsReset] != uint64(len(tc.stale)) || c[SynRetries] != uint64(len(tc.stale)) {
				t.Fatalf("stale_conns_reset %d, syn_retries %d; want %d each", c[StaleConnsReset], c[SynRetries], len(tc.stale))
			}
		})
	}
}

// TestStaleServerConnectionBounded: a server that does not take the reset
// answers each SYN with its old ACK again; the resets and SYNs stay within
// the per-second reset budget instead of spinning with it.
func TestStaleServerConnectionBounded(t *testing.T) {
	b := newBed(t, 10, 20, 30)
	b.tab.cfg.MaxResetsPerSecond = 2
	b.feed(true, b.fromClient(b.cISN, 0, rewrite.SYN, cTS0, 0), nil)
	frames := 0
	for range 5 {
		frames += len(b.feed(false, b.fromServer(primaryIP, 0x5000, 0x9000, rewrite.ACK, 500, 99, 98), nil))
	}
	if frames != 4 {
		t.Fatalf("5 old ACKs within a second drew %d frames, want 4: two resets and two SYNs", frames)
	}
	b.now += int64(time.Second)
	if out := b.feed(false, b.fromServer(primaryIP, 0x5000, 0x9000, rewrite.ACK, 500, 99, 98), nil); len(out) != 2 {
		t.Fatalf("a second later: %d frames, want the reset and the SYN", len(out))
	}
}

func TestOptionMismatchUnprotects(t *testing.T) {
	b := newBed(t, 10, 20, 30)
	syn := b.fromClient(b.cISN, 0, rewrite.SYN, cTS0, 0)
	syn.WScale = 7
	b.feed(true, syn, nil)
	psa := b.fromServer(primaryIP, b.pISN, b.cISN+1, rewrite.SYN|rewrite.ACK, 65160, pTS0, cTS0)
	psa.WScale = 7
	b.feed(false, psa, nil)
	bsa := b.fromServer(backupIP, b.bISN, b.cISN+1, rewrite.SYN|rewrite.ACK, 64000, bTS0, cTS0)
	out := b.feed(false, bsa, nil) // no window scale: cannot be reconciled
	var sa int
	for _, s := range out {
		if s.side == ClientSide && s.flags() == "SA" {
			sa++
		}
	}
	if sa != 1 || b.flow().Protection() != Unprotected || b.tab.Stats.Counters[OptionMismatches] != 1 {
		t.Fatalf("mismatch: %d SYN-ACKs, protection %v", sa, b.flow().Protection())
	}
}

// TestClientVisibleLegFirst: each client segment reaches the server whose
// reply the client sees before the other: on veth the datapath's send of a
// frame runs its receiver's whole receive path before the next one leaves.
func TestClientVisibleLegFirst(t *testing.T) {
	cases := []struct {
		name        string
		established bool
		seg         func(b *bed) rewrite.Spec
		payload     []byte
	}{
		{"SYN", false, func(b *bed) rewrite.Spec {
			syn := b.fromClient(b.cISN, 0, rewrite.SYN, cTS0, 0)
			syn.MSS, syn.WScale, syn.SACKPermitted = 1460, 7, true
			return syn
		}, nil},
		{"request", true, func(b *bed) rewrite.Spec {
			return b.fromClient(b.cISN+1, b.pISN+1, rewrite.ACK|rewrite.PSH, cTS0+2, pTS0)
		}, []byte("GET / HTTP/1.1\r\n\r\n")},
		{"pure ACK", true, func(b *bed) rewrite.Spec {
			return b.fromClient(b.cISN+1, b.pISN+1, rewrite.ACK, cTS0+2, pTS0)
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t, 1000, 5000, 900000)
			if tc.established {
				b.handshake()
			}
			out := b.feed(true, tc.seg(b), tc.payload)
			if len(out) != 2 {
				t.Fatalf("%d frames, want one per server", len(out))
			}
			if got := [4]byte(out[0].ip.DstIP.To4()); got != primaryIP {
				t.Fatalf("first frame to %v, then %v: want the primary %v first", out[0].ip.DstIP, out[1].ip.DstIP, net.IP(primaryIP[:]))
			}
		})
	}
}

// TestDataGating walks a request and a reply: the client sees the primary's
// bytes with acks and windows no leg is behind, and the backup's bytes are
// acknowledged only once the client acknowledged the same offset.
func TestDataGating(t *testing.T) {
	for _, tc := range isns {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t, tc.cISN, tc.pISN, tc.bISN)
			b.handshake()
			req := bytes.Repeat([]byte("r"), 100)
			out := b.feed(true, b.fromClient(b.cISN+1, b.pISN+1, rewrite.ACK|rewrite.PSH, cTS0+2, pTS0), req)
			p, bk := b.split(out)
			if !bytes.Equal(p.payload, req) || !bytes.Equal(bk.payload, req) {
				t.Fatal("request bytes altered")
			}
			// The primary acknowledges and answers at once; the backup lags.
			reply := bytes.Repeat([]byte("x"), 1000)
			out = b.feed(false, b.fromServer(primaryIP, b.pISN+1, b.cISN+101, rewrite.ACK|rewrite.PSH, 500, pTS0+5, cTS0+2), reply)
			if len(out) != 1 || out[0].side != ClientSide {
				t.Fatalf("primary reply: %d frames", len(out))
			}
			r := out[0]
			if rewrite.Seq(r.tcp.Ack) != b.cISN+1 {
				t.Fatalf("client shown ack %d, want %d: the backup has not acknowledged the request", r.tcp.Ack, b.cISN+1)
			}
			// Backup's window so far: its SYN-ACK's 64000 unscaled from cISN+1.
			// Primary's: 500<<7 = 64000 from cISN+101. Gated right edge = cISN+1+64000.
			if got := uint32(r.tcp.Window) << 7; got > 64000 || got < 64000-128 {
				t.Fatalf("window %d<<7 = %d, want about 64000", r.tcp.Window, got)
			}
			if [4]byte(r.ip.SrcIP.To4()) != vip || rewrite.Seq(r.tcp.Seq) != b.pISN+1 || !bytes.Equal(r.payload, reply) {
				t.Fatalf("reply rewritten wrongly: from %v seq %d", r.ip.SrcIP, r.tcp.Seq)
			}
			if v, _, _ := r.ts(); v != pTS0+5 {
				t.Fatalf("primary TSval altered: %d", v)
			}
			// The primary's pure ACK that gating hides is not forwarded.
			out = b.feed(false, b.fromServer(primaryIP, b.pISN+1001, b.cISN+101, rewrite.ACK, 600, pTS0+6, cTS0+2), nil)
			if len(out) != 0 || b.tab.Stats.Counters[AcksSuppressed] != 1 {
				t.Fatalf("hidden primary ACK: %d frames out", len(out))
			}
			// The backup's data arrives before the client acknowledged anything:
			// the gateway must not acknowledge it.
			out = b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+101, rewrite.ACK|rewrite.PSH, 125, bTS0+3, cTS0+2), reply[:600])
			var toClient []seg
			for _, s := range out {
				if s.side == ServerSide {
					t.Fatalf("gateway acknowledged backup data the client has not acknowledged: ack %d", s.tcp.Ack)
				}
				toClient = append(toClient, s)
			}
			// Its ack of the request releases the gated ack to the client.
			if len(toClient) != 1 || rewrite.Seq(toClient[0].tcp.Ack) != b.cISN+101 || len(toClient[0].payload) != 0 {
				t.Fatalf("backup's ack released %d frames to the client", len(toClient))
			}
			// Right edges: primary 101+600<<7, backup 101+125<<9=64000: gated = 101+64000.
			if got := uint32(toClient[0].tcp.Window) << 7; got > 64000 || got < 64000-128 {
				t.Fatalf("released window %d", got)
			}
			if v, _, _ := toClient[0].ts(); v != pTS0+6 {
				t.Fatalf("synthesised ACK TSval %d, want the primary's latest %d", v, uint32(pTS0+6))
			}
			if rewrite.Seq(toClient[0].tcp.Seq) != b.pISN+1001 {
				t.Fatalf("synthesised ACK seq %d, want %d", toClient[0].tcp.Seq, b.pISN+1001)
			}
			// The client acknowledges all 1000 bytes of the primary's reply; the
			// backup has sent only 600: its ack is clamped.
			out = b.feed(true, b.fromClient(b.cISN+101, b.pISN+1001, rewrite.ACK, cTS0+3, pTS0+5), nil)
			p, bk = b.split(out)
			if rewrite.Seq(p.tcp.Ack) != b.pISN+1001 {
				t.Fatalf("primary ack %d", p.tcp.Ack)
			}
			if rewrite.Seq(bk.tcp.Ack) != b.bISN+601 || b.tab.Stats.Counters[AcksClamped] == 0 {
				t.Fatalf("backup ack %d, want clamped to %d", bk.tcp.Ack, b.bISN+601)
			}
			if _, e, _ := bk.ts(); e != bTS0+3 {
				t.Fatalf("backup TSecr %d, want %d (translated, clamped to its latest)", e, bTS0+3)
			}
			// The rest of the backup's reply appears: the gateway acknowledges it.
			out = b.feed(false, b.fromServer(backupIP, b.bISN+601, b.cISN+101, rewrite.ACK|rewrite.PSH, 125, bTS0+4, cTS0+2), reply[600:])
			var acks []seg
			for _, s := range out {
				if s.side == ServerSide {
					acks = append(acks, s)
				} else {
					t.Fatalf("backup bytes reached the client: %d bytes", len(s.payload))
				}
			}
			if len(acks) != 1 || rewrite.Seq(acks[0].tcp.Ack) != b.bISN+1001 || [4]byte(acks[0].ip.DstIP.To4()) != backupIP ||
				[4]byte(acks[0].ip.SrcIP.To4()) != clientIP || rewrite.Seq(acks[0].tcp.Seq) != b.cISN+101 {
				t.Fatalf("gateway ACK to the backup: %+v", acks)
			}
			if v, e, _ := acks[0].ts(); v != cTS0+3 || e != bTS0+4 {
				t.Fatalf("gateway ACK timestamps %d/%d", v, e)
			}
		})
	}
}

// withRequest runs a handshake and a request of n bytes to both servers.
func withRequest(t *testing.T, tc struct {
	name             string
	cISN, pISN, bISN rewrite.Seq
}, n int) *bed {
	t.Helper()
	b := newBed(t, tc.cISN, tc.pISN, tc.bISN)
	b.handshake()
	b.feed(true, b.fromClient(b.cISN+1, b.pISN+1, rewrite.ACK|rewrite.PSH, cTS0+2, pTS0), bytes.Repeat([]byte("r"), n))
	return b
}

// TestNoAckWithoutNews: when the gated ack and right edge come from
// different legs, the right edge is rarely a whole number of the client's
// window units past the ack, and the window field shows it rounded down. A
// shadow segment that changes nothing must not make the gateway say the
// same ACK again: repeated, identical ACKs are duplicates to the client's
// TCP, which counts them as a sign of loss.
func TestNoAckWithoutNews(t *testing.T) {
	for _, tc := range isns {
		t.Run(tc.name, func(t *testing.T) {
			b := withRequest(t, tc, 100)
			// The backup's window grows: its right edge 1+130<<9 = 66561.
			b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+1, rewrite.ACK, 130, bTS0+2, cTS0+2), nil)
			// The primary's: ack 101, right edge 101+509<<7 = 65253. Gated:
			// the backup's ack 1 and the primary's edge, 65252 bytes apart,
			// 509.8 units of 128.
			reply := bytes.Repeat([]byte("x"), 1000)
			out := b.feed(false, b.fromServer(primaryIP, b.pISN+1, b.cISN+101, rewrite.ACK|rewrite.PSH, 509, pTS0+5, cTS0+2), reply)
			if len(out) != 1 || out[0].side != ClientSide || rewrite.Seq(out[0].tcp.Ack) != b.cISN+1 || out[0].tcp.Window != 509 {
				t.Fatalf("primary reply: %d frames, want one to the client with ack %d window 509", len(out), b.cISN+1)
			}
			for k, n := range []rewrite.Seq{0, 600} {
				out = b.feed(false, b.fromServer(backupIP, b.bISN+1+n, b.cISN+1, rewrite.ACK|rewrite.PSH, 130, bTS0+3, cTS0+2), reply[n:n+400])
				if len(out) != 0 {
					t.Fatalf("backup segment %d, which changes nothing the client is shown: %d frames out (ack %d window %d)",
						k, len(out), out[0].tcp.Ack, out[0].tcp.Window)
				}
			}
			// The client sends 100 more bytes; the primary's pure ACK of them
			// moves its ack but nothing the client is shown (its right edge
			// never shrinks): gating hides it.
			b.feed(true, b.fromClient(b.cISN+101, b.pISN+1001, rewrite.ACK|rewrite.PSH, cTS0+3, pTS0+5), bytes.Repeat([]byte("s"), 100))
			if out = b.feed(false, b.fromServer(primaryIP, b.pISN+1001, b.cISN+201, rewrite.ACK, 508, pTS0+6, cTS0+3), nil); len(out) != 0 {
				t.Fatalf("primary's pure ACK hidden by gating: %d frames out (ack %d window %d)", len(out), out[0].tcp.Ack, out[0].tcp.Window)
			}
			// News: the backup acknowledges the request (and the gateway
			// the backup's bytes the client has now acknowledged).
			var toClient []seg
			for _, o := range b.feed(false, b.fromServer(backupIP, b.bISN+401, b.cISN+101, rewrite.ACK|rewrite.PSH, 130, bTS0+4, cTS0+2), reply[400:600]) {
				if o.side == ClientSide {
					toClient = append(toClient, o)
				}
			}
			if len(toClient) != 1 || rewrite.Seq(toClient[0].tcp.Ack) != b.cISN+101 || len(toClient[0].payload) != 0 {
				t.Fatalf("backup's ack of the request: %d frames to the client, want one pure ACK of %d", len(toClient), b.cISN+101)
			}
		})
	}
}

// primaryAhead runs a handshake and a 3-byte request, which the backup
// acknowledges, and the primary then sends n segments of the 1000 bytes it
// returns; the backup sends nothing yet.
func primaryAhead(t *testing.T, tc struct {
	name             string
	cISN, pISN, bISN rewrite.Seq
}, n int) (*bed, []byte) {
	t.Helper()
	b := newBed(t, tc.cISN, tc.pISN, tc.bISN)
	b.handshake()
	b.feed(true, b.fromClient(b.cISN+1, b.pISN+1, rewrite.ACK|rewrite.PSH, cTS0+2, pTS0), []byte("GET"))
	b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+4, rewrite.ACK, 125, bTS0+1, cTS0+2), nil)
	data := bytes.Repeat([]byte("x"), 1000)
	for k := rewrite.Seq(0); k < rewrite.Seq(n); k++ {
		b.feed(false, b.fromServer(primaryIP, b.pISN+1+k*1000, b.cISN+4, rewrite.ACK, 500, pTS0+2, cTS0+2), data)
	}
	return b, data
}

// TestClampedAckNotRepeated: client ACKs that a lagging leg gets clamped
// to what it sent say nothing new once it was told that: they are not sent
// again (a sender without SACK counts repeats towards a fast retransmit).
// A change of window, and the client's own repeated ACK, still go.
func TestClampedAckNotRepeated(t *testing.T) {
	for _, tc := range isns {
		t.Run(tc.name, func(t *testing.T) {
			b, data := primaryAhead(t, tc, 4)
			b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+4, rewrite.ACK, 125, bTS0+2, cTS0+2), data)
			ack := func(a rewrite.Seq, win uint16) (p, bk *seg) {
				t.Helper()
				s := b.fromClient(b.cISN+4, a, rewrite.ACK, cTS0+3, pTS0+2)
				s.Window = win
				for _, o := range b.feed(true, s, nil) {
					switch {
					case o.side != ServerSide:
						t.Fatalf("client ACK made a frame to the client")
					case [4]byte(o.ip.DstIP.To4()) == primaryIP:
						p = &o
					default:
						bk = &o
					}
				}
				if p == nil {
					t.Fatalf("client ACK of %d not forwarded to the primary", a-b.pISN)
				}
				return p, bk
			}
			// The client has 2000 bytes, the backup sent 1000: clamped.
			if _, bk := ack(b.pISN+2001, 1000); bk == nil || rewrite.Seq(bk.tcp.Ack) != b.bISN+1001 {
				t.Fatalf("first clamped ACK: backup got %v, want ack %d", bk, b.bISN+1001)
			}
			// More of the primary's bytes acknowledged: the backup would get
			// the same ack and window again.
			for _, a := range []rewrite.Seq{3001, 4001} {
				if _, bk := ack(b.pISN+a, 1000); bk != nil {
					t.Fatalf("ACK of %d: the backup was told ack %d window %d again", a, bk.tcp.Ack-uint32(b.bISN), bk.tcp.Window)
				}
			}
			// The client's window changes: news for the backup.
			if _, bk := ack(b.pISN+4001, 900); bk == nil || rewrite.Seq(bk.tcp.Ack) != b.bISN+1001 || bk.tcp.Window != 900 {
				t.Fatalf("window update: backup got %v, want ack %d window 900", bk, b.bISN+1001)
			}
			// The backup catches up; the client's own repeat of its ACK
			// (unclamped) reaches both servers.
			for k := rewrite.Seq(1); k < 4; k++ {
				b.feed(false, b.fromServer(backupIP, b.bISN+1+k*1000, b.cISN+4, rewrite.ACK, 125, bTS0+3, cTS0+2), data)
			}
			for range 2 {
				if _, bk := ack(b.pISN+4001, 900); bk == nil || rewrite.Seq(bk.tcp.Ack) != b.bISN+4001 {
					t.Fatalf("client's repeated ACK: backup got %v, want ack %d", bk, b.bISN+4001)
				}
			}
			if n := b.tab.Stats.Counters[AcksRepeatSkipped]; n != 2 {
				t.Fatalf("acks_repeat_skipped %d, want 2", n)
			}
		})
	}
}

// TestBackupDuplicateAck: a backup's duplicate ACK while it is behind the
// primary (a client segment lost on the way to it) reaches the client as
// one, so the client sends it again; a window update is not a duplicate
// (RFC 5681: same ack, same window) and shows the client nothing new.
func TestBackupDuplicateAck(t *testing.T) {
	for _, tc := range isns {
		t.Run(tc.name, func(t *testing.T) {
			b := withRequest(t, tc, 100)
			out := b.feed(false, b.fromServer(primaryIP, b.pISN+1, b.cISN+101, rewrite.ACK|rewrite.PSH, 500, pTS0+1, cTS0+2), bytes.Repeat([]byte("x"), 1000))
			if len(out) != 1 || rewrite.Seq(out[0].tcp.Ack) != b.cISN+1 {
				t.Fatalf("primary's reply: %d frames, want one with ack %d", len(out), b.cISN+1)
			}
			// The backup's window grows past the primary's (1+128<<9 against
			// 1+65160), its ack still short of the request: the client is
			// shown the primary's edge now.
			out = b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+1, rewrite.ACK, 128, bTS0+1, cTS0+2), nil)
			if len(out) != 1 || out[0].tcp.Window != 65160>>7 {
				t.Fatalf("backup's window update: %d frames, want one showing window %d", len(out), 65160>>7)
			}
			// It grows again: nothing the client is shown changes.
			if out := b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+1, rewrite.ACK, 130, bTS0+2, cTS0+2), nil); len(out) != 0 {
				t.Fatalf("backup's second window update: %d frames to the client (ack %d window %d), want none", len(out), out[0].tcp.Ack, out[0].tcp.Window)
			}
			// The same again: a duplicate, the backup's loss signal.
			out = b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+1, rewrite.ACK, 130, bTS0+3, cTS0+2), nil)
			if len(out) != 1 || out[0].side != ClientSide || rewrite.Seq(out[0].tcp.Ack) != b.cISN+1 || len(out[0].payload) != 0 {
				t.Fatalf("backup's duplicate ACK: %d frames, want one ACK of %d to the client", len(out), b.cISN+1)
			}
			if blocks := sackBlocks(out[0]); len(blocks) != 0 {
				t.Fatalf("duplicate ACK without SACK passed on with blocks %v", blocks)
			}
			// With SACK, as Linux sends it: the blocks both servers hold go
			// along (a Linux client with SACK ignores a duplicate ACK that
			// SACKs nothing); the part past the primary's ack does not.
			dup := b.fromServer(backupIP, b.bISN+1, b.cISN+1, rewrite.ACK, 130, bTS0+4, cTS0+2)
			dup.SACK = [][2]rewrite.Seq{{b.cISN + 51, b.cISN + 101}, {b.cISN + 121, b.cISN + 131}}
			out = b.feed(false, dup, nil)
			if len(out) != 1 || out[0].side != ClientSide || rewrite.Seq(out[0].tcp.Ack) != b.cISN+1 {
				t.Fatalf("backup's duplicate ACK with SACK: %d frames, want one ACK of %d to the client", len(out), b.cISN+1)
			}
			if blocks := sackBlocks(out[0]); len(blocks) != 1 || blocks[0] != [2]uint32{uint32(b.cISN + 51), uint32(b.cISN + 101)} {
				t.Fatalf("duplicate ACK's SACK blocks %v, want the one both servers hold, %d-%d", blocks, b.cISN+51, b.cISN+101)
			}
			// A Linux receiver with SACK widens its window on out-of-order
			// data: a loss report with SACK is one whatever its window.
			dup = b.fromServer(backupIP, b.bISN+1, b.cISN+1, rewrite.ACK, 131, bTS0+5, cTS0+2)
			dup.SACK = [][2]rewrite.Seq{{b.cISN + 41, b.cISN + 101}}
			out = b.feed(false, dup, nil)
			if len(out) != 1 || rewrite.Seq(out[0].tcp.Ack) != b.cISN+1 || len(sackBlocks(out[0])) != 1 {
				t.Fatalf("backup's SACK with a wider window: %d frames, want one ACK of %d with its block", len(out), b.cISN+1)
			}
			// The backup acknowledges 51, then reports a duplicate below it
			// (D-SACK) and a block across the primary's ack: the client gets
			// neither the block below its ack nor the part the primary lacks.
			b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+51, rewrite.ACK, 131, bTS0+6, cTS0+2), nil)
			dup = b.fromServer(backupIP, b.bISN+1, b.cISN+51, rewrite.ACK, 131, bTS0+7, cTS0+2)
			dup.SACK = [][2]rewrite.Seq{{b.cISN + 1, b.cISN + 51}, {b.cISN + 91, b.cISN + 111}}
			out = b.feed(false, dup, nil)
			if len(out) != 1 || rewrite.Seq(out[0].tcp.Ack) != b.cISN+51 {
				t.Fatalf("backup's D-SACK: %d frames, want one ACK of %d", len(out), b.cISN+51)
			}
			if blocks := sackBlocks(out[0]); len(blocks) != 1 || blocks[0] != [2]uint32{uint32(b.cISN + 91), uint32(b.cISN + 101)} {
				t.Fatalf("SACK blocks %v, want only %d-%d", blocks, b.cISN+91, b.cISN+101)
			}
			// A client that did not offer SACK gets none.
			b.flow().cli.opt.sackOK = false
			out = b.feed(false, dup, nil)
			if len(out) != 1 || rewrite.Seq(out[0].tcp.Ack) != b.cISN+51 || len(sackBlocks(out[0])) != 0 {
				t.Fatalf("duplicate ACK to a client without SACK: %d frames, want one ACK of %d without blocks", len(out), b.cISN+51)
			}
		})
	}
}

// TestClampedAckAfterRetransmission: after a takeover the new live leg is
// behind the client. The gateway's clamped ACK of its data may be lost; when
// the leg sends those bytes again, the client's answer, clamped to the same
// ack and window, must reach it, or it would resend until it gave up.
func TestClampedAckAfterRetransmission(t *testing.T) {
	for _, tc := range isns {
		t.Run(tc.name, func(t *testing.T) {
			reply := replyBytes(5000)
			b := midReply(t, tc, reply, 1000)
			for off := 1000; off < 3000; off += 1000 {
				b.feed(false, b.fromServer(primaryIP, b.pISN+1+rewrite.Seq(off), b.cISN+19, rewrite.ACK, 500, pTS0+11, cTS0+2), reply[off:off+1000])
			}
			b.feed(true, b.fromClient(b.cISN+19, b.pISN+3001, rewrite.ACK, cTS0+3, pTS0+11), nil)
			b.tab.ServerDown(b.now, 0, "probe")
			b.tick(0)
			// The backup, live now, sends bytes 1000-2000, which the client has.
			b.feed(false, b.fromServer(backupIP, b.bISN+1001, b.cISN+19, rewrite.ACK, 125, bTS0+5, cTS0+3), reply[1000:2000])
			toBackup := func(k uint32) []seg {
				var r []seg
				for _, o := range b.feed(true, b.fromClient(b.cISN+19, b.pISN+3001, rewrite.ACK, cTS0+3+k, pTS0+11), nil) {
					if o.side == ServerSide && [4]byte(o.ip.DstIP.To4()) == backupIP {
						r = append(r, o)
					}
				}
				return r
			}
			if got := toBackup(1); len(got) != 1 || rewrite.Seq(got[0].tcp.Ack) != b.bISN+2001 {
				t.Fatalf("client's ACK: %d frames to the backup, want one ACK of %d", len(got), b.bISN+2001)
			}
			// Said again with nothing new from the backup: skipped.
			if got := toBackup(2); len(got) != 0 {
				t.Fatalf("client's repeated ACK clamped to the same: %d frames to the backup, want none", len(got))
			}
			// That ACK was lost: the backup resends, each time answered.
			for k := uint32(3); k < 6; k++ {
				b.feed(false, b.fromServer(backupIP, b.bISN+1001, b.cISN+19, rewrite.ACK, 125, bTS0+5+k, cTS0+3), reply[1000:2000])
				if got := toBackup(k); len(got) != 1 || rewrite.Seq(got[0].tcp.Ack) != b.bISN+2001 {
					t.Fatalf("after the backup's retransmission %d: %d frames to it, want one ACK of %d", k-2, len(got), b.bISN+2001)
				}
			}
		})
	}
}

// TestShadowAcksCoalesced: a shadow that lags the client has each segment
// acknowledgeable on arrival; the gateway says so once per batch, at its
// end, and not at all when a forwarded client ACK said it first.
func TestShadowAcksCoalesced(t *testing.T) {
	for _, tc := range isns {
		t.Run(tc.name, func(t *testing.T) {
			b, seg := primaryAhead(t, tc, 6)
			// The client has all 6000 bytes before the backup sent one.
			b.feed(true, b.fromClient(b.cISN+4, b.pISN+6001, rewrite.ACK, cTS0+3, pTS0+2), nil)
			for k := rewrite.Seq(0); k < 4; k++ {
				out := b.feedInBatch(false, b.fromServer(backupIP, b.bISN+1+k*1000, b.cISN+4, rewrite.ACK, 125, bTS0+2, cTS0+2), seg)
				if len(out) != 0 {
					t.Fatalf("backup segment %d in a batch: %d frames out, want none until the batch ends", k, len(out))
				}
			}
			acks := b.flush()
			if len(acks) != 1 || acks[0].side != ServerSide || [4]byte(acks[0].ip.DstIP.To4()) != backupIP ||
				rewrite.Seq(acks[0].tcp.Ack) != b.bISN+4001 {
				t.Fatalf("batch end: %d frames, want one ACK of the backup's 4000 bytes", len(acks))
			}
			if v, e, _ := acks[0].ts(); v != cTS0+3 || e != bTS0+2 {
				t.Fatalf("coalesced ACK timestamps %d/%d, want %d/%d", v, e, cTS0+3, bTS0+2)
			}
			// Owed, then said by the client's own ACK in the same batch: the
			// batch's end adds nothing.
			b.feedInBatch(false, b.fromServer(backupIP, b.bISN+4001, b.cISN+4, rewrite.ACK, 125, bTS0+3, cTS0+2), seg)
			p, bk := b.split(b.feedInBatch(true, b.fromClient(b.cISN+4, b.pISN+6001, rewrite.ACK, cTS0+4, pTS0+2), nil))
			if rewrite.Seq(p.tcp.Ack) != b.pISN+6001 || rewrite.Seq(bk.tcp.Ack) != b.bISN+5001 {
				t.Fatalf("client ACK forwarded as %d/%d, want %d/%d", p.tcp.Ack, bk.tcp.Ack, b.pISN+6001, b.bISN+5001)
			}
			if out := b.flush(); len(out) != 0 {
				t.Fatalf("batch end after the client's ACK: %d frames, want none", len(out))
			}
		})
	}
}

// TestAckHold: a client's pure ACK of everything the servers sent waits
// for the client's next segment to carry it, and is sent by the gateway
// when the hold ends if none did; any ACK a server may be waiting on goes at
// once.
func TestAckHold(t *testing.T) {
	const hold = 200 * time.Microsecond
	reply := bytes.Repeat([]byte("r"), 1000)
	// request runs a request and the primary's 1000-byte reply.
	request := func(b *bed) {
		b.feed(true, b.fromClient(b.cISN+1, b.pISN+1, rewrite.ACK|rewrite.PSH, cTS0+1, pTS0), []byte("GET"))
		b.feed(false, b.fromServer(primaryIP, b.pISN+1, b.cISN+4, rewrite.ACK|rewrite.PSH, 500, pTS0+1, cTS0+1), reply)
	}
	// backupReply feeds the backup's 1000-byte reply and returns what came out.
	backupReply := func(b *bed) []seg {
		return b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+4, rewrite.ACK|rewrite.PSH, 125, bTS0+1, cTS0+1), reply)
	}
	// exchange runs a request and both servers' 1000-byte replies, and
	// returns the client's ACK of the reply, not yet fed.
	exchange := func(b *bed) rewrite.Spec {
		request(b)
		backupReply(b)
		return b.fromClient(b.cISN+4, b.pISN+1001, rewrite.ACK, cTS0+2, pTS0+1)
	}
	wantAcks := func(b *bed, out []seg, p, bk rewrite.Seq) {
		b.t.Helper()
		ps, bs := b.split(out)
		if ps.flags() != "A" || bs.flags() != "A" || len(ps.payload)+len(bs.payload) != 0 ||
			rewrite.Seq(ps.tcp.Ack) != p || rewrite.Seq(bs.tcp.Ack) != bk {
			b.t.Fatalf("ACKs to the servers %s ack %d / %s ack %d, want pure ACKs of %d / %d",
				ps.flags(), ps.tcp.Ack, bs.flags(), bs.tcp.Ack, p, bk)
		}
	}
	tests := []struct {
		name string
		run  func(b *bed)
	}{
		{"carried by the next request", func(b *bed) {
			if out := b.feed(true, exchange(b), nil); len(out) != 0 {
				b.t.Fatalf("held ACK: %d frames out, want none", len(out))
			}
			next := b.feed(true, b.fromClient(b.cISN+4, b.pISN+1001, rewrite.ACK|rewrite.PSH, cTS0+3, pTS0+1), []byte("GET"))
			if ps, bs := b.split(next); rewrite.Seq(ps.tcp.Ack) != b.pISN+1001 || rewrite.Seq(bs.tcp.Ack) != b.bISN+1001 {
				b.t.Fatalf("next request acks %d / %d, want %d / %d", ps.tcp.Ack, bs.tcp.Ack, b.pISN+1001, b.bISN+1001)
			}
			if out := b.tick(hold); len(out) != 0 {
				b.t.Fatalf("hold over after the request said it: %d frames, want none", len(out))
			}
		}},
		{"sent when the hold ends", func(b *bed) {
			b.feed(true, exchange(b), nil)
			if out := b.tick(hold - 1); len(out) != 0 {
				b.t.Fatalf("before the hold ends: %d frames, want none", len(out))
			}
			if due := b.tab.NextDue(); due != b.now+1 {
				b.t.Fatalf("NextDue %d, want %d", due, b.now+1)
			}
			out := b.tick(1)
			wantAcks(b, out, b.pISN+1001, b.bISN+1001)
			if v, e, _ := out[0].ts(); v != cTS0+2 {
				b.t.Fatalf("held ACK's TSval %d (ecr %d), want the client's %d", v, e, cTS0+2)
			}
			if b.tab.NextDue() != 0 {
				b.t.Fatal("NextDue still set with nothing held")
			}
		}},
		{"a lagging backup's ACK waits with it", func(b *bed) {
			request(b)
			if out := b.feed(true, b.fromClient(b.cISN+4, b.pISN+1001, rewrite.ACK, cTS0+2, pTS0+1), nil); len(out) != 0 {
				b.t.Fatalf("held ACK: %d frames out, want none", len(out))
			}
			// The backup's reply is owed an ACK, which the hold's end pays.
			// (Its ack of the request lets the client see the primary's.)
			if out := toServers(backupReply(b)); len(out) != 0 {
				b.t.Fatalf("backup reply during the hold: %d frames to servers, want none", len(out))
			}
			wantAcks(b, b.tick(hold), b.pISN+1001, b.bISN+1001)
		}},
		{"a lagging backup's small debt waits", func(b *bed) {
			// The backup is a whole exchange behind: the next request
			// reaches it before its reply, and can acknowledge none of it.
			request(b)
			b.feed(true, b.fromClient(b.cISN+4, b.pISN+1001, rewrite.ACK|rewrite.PSH, cTS0+2, pTS0+1), []byte("GET"))
			if out := toServers(backupReply(b)); len(out) != 0 {
				b.t.Fatalf("backup's 1000 bytes acknowledged at the batch end, want it held")
			}
			out := b.tick(hold)
			if len(out) != 1 || [4]byte(out[0].ip.DstIP.To4()) != backupIP || rewrite.Seq(out[0].tcp.Ack) != b.bISN+1001 {
				b.t.Fatalf("hold over: %d frames, want the backup's ACK of its 1000 bytes", len(out))
			}
		}},
		{"two full segments owed go at the batch end", func(b *bed) {
			b.feed(true, b.fromClient(b.cISN+1, b.pISN+1, rewrite.ACK|rewrite.PSH, cTS0+1, pTS0), []byte("GET"))
			for k := rewrite.Seq(0); k < 3; k++ {
				b.feed(false, b.fromServer(primaryIP, b.pISN+1+k*1000, b.cISN+4, rewrite.ACK, 500, pTS0+1, cTS0+1), reply)
			}
			b.feed(true, b.fromClient(b.cISN+4, b.pISN+3001, rewrite.ACK|rewrite.PSH, cTS0+2, pTS0+1), []byte("GET"))
			for k := rewrite.Seq(0); k < 3; k++ {
				b.feedInBatch(false, b.fromServer(backupIP, b.bISN+1+k*1000, b.cISN+4, rewrite.ACK, 125, bTS0+1, cTS0+1), reply)
			}
			if acks := toServers(b.flush()); len(acks) != 1 || [4]byte(acks[0].ip.DstIP.To4()) != backupIP || rewrite.Seq(acks[0].tcp.Ack) != b.bISN+3001 {
				b.t.Fatalf("batch end: %d frames to servers, want the backup's ACK of its 3000 bytes", len(acks))
			}
		}},
		{"data in flight", func(b *bed) {
			b.feed(true, b.fromClient(b.cISN+1, b.pISN+1, rewrite.ACK|rewrite.PSH, cTS0+1, pTS0), []byte("GET"))
			for k := rewrite.Seq(0); k < 2; k++ {
				b.feed(false, b.fromServer(primaryIP, b.pISN+1+k*1000, b.cISN+4, rewrite.ACK, 500, pTS0+1, cTS0+1), reply)
				b.feed(false, b.fromServer(backupIP, b.bISN+1+k*1000, b.cISN+4, rewrite.ACK, 125, bTS0+1, cTS0+1), reply)
			}
			wantAcks(b, b.feed(true, b.fromClient(b.cISN+4, b.pISN+1001, rewrite.ACK, cTS0+2, pTS0+1), nil), b.pISN+1001, b.bISN+1001)
		}},
		{"most of the window used", func(b *bed) {
			ack := exchange(b)
			ack.Window = 1 // 128 bytes at the client's scale: the servers may wait on it
			small := b.fromClient(b.cISN+4, b.pISN+1, rewrite.ACK, cTS0+2, pTS0+1)
			small.Window = 8 // 1024 bytes, 1000 of them in flight
			b.feed(true, small, nil)
			wantAcks(b, b.feed(true, ack, nil), b.pISN+1001, b.bISN+1001)
		}},
		{"duplicate ACK", func(b *bed) {
			ack := exchange(b)
			b.feed(true, ack, nil)
			ack.TSval++
			wantAcks(b, b.feed(true, ack, nil), b.pISN+1001, b.bISN+1001)
		}},
		{"with a D-SACK", func(b *bed) {
			// Every byte acknowledged, and a duplicate reported: a loss signal.
			out := b.feedSACK(exchange(b), [][2]rewrite.Seq{{b.pISN + 1, b.pISN + 1001}})
			wantAcks(b, out, b.pISN+1001, b.bISN+1001)
		}},
	}
	for _, tc := range isns {
		for _, c := range tests {
			t.Run(tc.name+"/"+c.name, func(t *testing.T) {
				b := newBedHolding(t, tc.cISN, tc.pISN, tc.bISN, hold)
				b.handshake()
				c.run(b)
			})
		}
	}
	t.Run("off", func(t *testing.T) {
		b := newBedHolding(t, 1, 2, 3, -1)
		b.handshake()
		wantAcks(b, b.feed(true, exchange(b), nil), b.pISN+1001, b.bISN+1001)
	})
}

// toServers keeps the frames out that go to a server.
func toServers(out []seg) []seg {
	var kept []seg
	for _, s := range out {
		if s.side == ServerSide {
			kept = append(kept, s)
		}
	}
	return kept
}

func TestSACKTranslation(t *testing.T) {
	for _, tc := range isns {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t, tc.cISN, tc.pISN, tc.bISN)
			b.handshake()
			data := bytes.Repeat([]byte("y"), 1000)
			for i := 0; i < 3; i++ {
				b.feed(false, b.fromServer(backupIP, b.bISN+1+rewrite.Seq(i*1000), b.cISN+1, rewrite.ACK, 125, bTS0+1, cTS0), data)
			}
			// The client lost the primary's first segment and SACKs the next two.
			s := b.fromClient(b.cISN+1, b.pISN+1, rewrite.ACK, cTS0+2, pTS0)
			out := b.feedSACK(s, [][2]rewrite.Seq{{b.pISN + 1001, b.pISN + 3001}, {b.pISN + 4001, b.pISN + 5001}})
			p, bk := b.split(out)
			if got := sackBlocks(p); len(got) != 2 || got[0] != [2]uint32{uint32(b.pISN + 1001), uint32(b.pISN + 3001)} {
				t.Fatalf("primary SACK altered: %v", got)
			}
			// For the backup: the first block moves into its space; the second
			// covers bytes it never sent and goes.
			got := sackBlocks(bk)
			if len(got) != 1 || got[0] != [2]uint32{uint32(b.bISN + 1001), uint32(b.bISN + 3001)} {
				t.Fatalf("backup SACK %v, want [[%d %d]]", got, uint32(b.bISN+1001), uint32(b.bISN+3001))
			}
		})
	}
}

func (b *bed) feedSACK(s rewrite.Spec, blocks [][2]rewrite.Seq) []seg {
	b.t.Helper()
	n := copy(b.buf, sackFrame(b.t, &s, blocks))
	if r := b.pkt.Parse(b.buf[:n], false, true); r != rewrite.OK {
		b.t.Fatalf("SACK frame rejected: %v", r)
	}
	b.out.Reset()
	b.tab.HandleClient(b.now, &b.pkt, b.out)
	return b.collect()
}

// sackFrame builds a pure ACK carrying SACK blocks (and timestamps when s
// has them) with gopacket, apart from rewrite.Build.
func sackFrame(t testing.TB, s *rewrite.Spec, blocks [][2]rewrite.Seq) []byte {
	t.Helper()
	nop := layers.TCPOption{OptionType: layers.TCPOptionKindNop}
	var opts []layers.TCPOption
	if s.HasTS {
		d := make([]byte, 8)
		put32(d[0:], s.TSval)
		put32(d[4:], s.TSecr)
		opts = append(opts, nop, nop, layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: d})
	}
	d := make([]byte, 8*len(blocks))
	for i, bl := range blocks {
		put32(d[8*i:], uint32(bl[0]))
		put32(d[8*i+4:], uint32(bl[1]))
	}
	opts = append(opts, nop, nop, layers.TCPOption{OptionType: layers.TCPOptionKindSACK, OptionLength: uint8(2 + len(d)), OptionData: d})
	eth := &layers.Ethernet{EthernetType: layers.EthernetTypeIPv4, SrcMAC: make([]byte, 6), DstMAC: make([]byte, 6)}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: s.Src[:], DstIP: s.Dst[:]}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(s.SrcPort), DstPort: layers.TCPPort(s.DstPort), Seq: uint32(s.Seq), Ack: uint32(s.Ack),
		ACK: true, Window: s.Window, Options: opts}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	sb := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(sb, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}, eth, ip, tcp); err != nil {
		t.Fatal(err)
	}
	return sb.Bytes()
}

func put32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
}

func sackBlocks(s seg) [][2]uint32 {
	d, ok := s.opt(layers.TCPOptionKindSACK)
	if !ok {
		return nil
	}
	var out [][2]uint32
	for i := 0; i+8 <= len(d); i += 8 {
		out = append(out, [2]uint32{be32(d[i:]), be32(d[i+4:])})
	}
	return out
}

// TestFinAgreement: the primary's FIN reaches the client only once the
// backup has closed at the same offset.
func TestFinAgreement(t *testing.T) {
	for _, tc := range isns {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t, tc.cISN, tc.pISN, tc.bISN)
			b.handshake()
			body := []byte("hello")
			out := b.feed(false, b.fromServer(primaryIP, b.pISN+1, b.cISN+1, rewrite.ACK|rewrite.FIN, 500, pTS0+1, cTS0), body)
			if len(out) != 1 || out[0].tcp.FIN || !bytes.Equal(out[0].payload, body) {
				t.Fatalf("primary FIN with data: %d frames, fin %v", len(out), len(out) > 0 && out[0].tcp.FIN)
			}
			out = b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+1, rewrite.ACK|rewrite.FIN, 125, bTS0+1, cTS0), body)
			var fin []seg
			for _, s := range out {
				if s.side == ClientSide && s.tcp.FIN {
					fin = append(fin, s)
				}
			}
			if len(fin) != 1 || rewrite.Seq(fin[0].tcp.Seq) != b.pISN+6 {
				t.Fatalf("FIN to the client after agreement: %d, seq %v", len(fin), fin)
			}
			// The client acknowledges the FIN and closes too.
			out = b.feed(true, b.fromClient(b.cISN+1, b.pISN+7, rewrite.ACK|rewrite.FIN, cTS0+1, pTS0+1), nil)
			p, bk := b.split(out)
			if rewrite.Seq(p.tcp.Ack) != b.pISN+7 || rewrite.Seq(bk.tcp.Ack) != b.bISN+7 {
				t.Fatalf("FIN acks: primary %d backup %d", p.tcp.Ack, bk.tcp.Ack)
			}
			b.feed(false, b.fromServer(primaryIP, b.pISN+7, b.cISN+2, rewrite.ACK, 500, pTS0+2, cTS0+1), nil)
			b.feed(false, b.fromServer(backupIP, b.bISN+7, b.cISN+2, rewrite.ACK, 125, bTS0+2, cTS0+1), nil)
			if st := b.flow().State(); st != StateTimeWait {
				t.Fatalf("state %v after both directions closed", st)
			}
			b.tick(31 * time.Second)
			if b.tab.Len() != 0 {
				t.Fatal("TIME_WAIT flow not expired")
			}
		})
	}
}

// TestHeldFinSaysNothingTwice: while the backup has not closed, the
// primary's FIN reaches the client without its FIN flag. A FIN that comes
// alone, or again, is then a pure ACK; unless gating lets it show something
// new, it would be the same ACK again, a duplicate to the client.
func TestHeldFinSaysNothingTwice(t *testing.T) {
	for _, tc := range isns {
		t.Run(tc.name, func(t *testing.T) {
			b := withRequest(t, tc, 100)
			// The backup has not acknowledged the request: the client is
			// shown ack 1. The primary's reply comes with its FIN.
			out := b.feed(false, b.fromServer(primaryIP, b.pISN+1, b.cISN+101, rewrite.ACK|rewrite.PSH|rewrite.FIN, 500, pTS0+1, cTS0+2), bytes.Repeat([]byte("x"), 1000))
			if len(out) != 1 || out[0].tcp.FIN || rewrite.Seq(out[0].tcp.Ack) != b.cISN+1 || len(out[0].payload) != 1000 {
				t.Fatalf("reply with FIN: %d frames, want the reply without its FIN", len(out))
			}
			b.feed(true, b.fromClient(b.cISN+101, b.pISN+1001, rewrite.ACK, cTS0+3, pTS0+1), nil)
			for k := uint32(1); k <= 3; k++ {
				out = b.feed(false, b.fromServer(primaryIP, b.pISN+1001, b.cISN+101, rewrite.ACK|rewrite.FIN, 500, pTS0+50*k, cTS0+3), nil)
				for _, o := range out {
					if o.side == ClientSide {
						t.Fatalf("FIN retransmission %d reached the client as %s ack %d, an ACK it had", k, o.flags(), o.tcp.Ack)
					}
				}
			}
			// The backup acknowledges the request: news, sent once.
			out = b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+101, rewrite.ACK, 125, bTS0+1, cTS0+2), nil)
			if len(out) != 1 || out[0].side != ClientSide || rewrite.Seq(out[0].tcp.Ack) != b.cISN+101 || out[0].tcp.FIN {
				t.Fatalf("backup's ack of the request: %d frames, want one ACK of %d to the client", len(out), b.cISN+101)
			}
		})
	}
}

func TestFinMismatchUnprotects(t *testing.T) {
	b := newBed(t, 1, 2, 3)
	b.handshake()
	b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+1, rewrite.ACK|rewrite.FIN, 125, bTS0+1, cTS0), []byte("abc"))
	out := b.feed(false, b.fromServer(primaryIP, b.pISN+1, b.cISN+1, rewrite.ACK|rewrite.FIN, 500, pTS0+1, cTS0), []byte("hello"))
	out = append(out, b.tick(0)...)
	var fin, rst int
	for _, s := range out {
		if s.side == ClientSide && s.tcp.FIN {
			fin++
		}
		if s.side == ServerSide && s.tcp.RST {
			rst++
		}
	}
	if fin != 1 || rst != 1 || b.flow().Protection() != Unprotected {
		t.Fatalf("FIN mismatch: %d FINs to the client, %d RSTs to the backup, %v", fin, rst, b.flow().Protection())
	}
}

func TestResets(t *testing.T) {
	b := newBed(t, 100, 200, 300)
	b.handshake()
	// A blind client RST far outside the window is ignored.
	if out := b.feed(true, b.fromClient(b.cISN+1+1<<30, 0, rewrite.RST, cTS0, 0), nil); len(out) != 0 {
		t.Fatalf("off-window RST forwarded")
	}
	if b.tab.Stats.Drops[DropOffWindowRST] != 1 {
		t.Fatal("off-window RST not counted")
	}
	// An in-window client RST ends the flow on both legs.
	out := b.feed(true, b.fromClient(b.cISN+1, 0, rewrite.RST, cTS0, 0), nil)
	p, bk := b.split(out)
	if !p.tcp.RST || !bk.tcp.RST {
		t.Fatal("client RST not sent to both servers")
	}
	if b.flow().State() != StateClosed {
		t.Fatal("flow not closed by client RST")
	}
}

// TestStaleSynChallenged: a SYN with another ISN on a connection the client
// was shown is dropped and answered with an ACK of where the connection
// stands. A client that lost the connection answers that with a reset at
// its ack, which ends the flow, and its next SYN opens a new one on both
// servers. Before the client is shown the connection, the SYN is only
// dropped.
func TestStaleSynChallenged(t *testing.T) {
	b := newBed(t, 100, 200, 300)
	b.handshake()
	newISN := b.cISN + 1<<31
	// One challenge ACK per 500 ms, as Linux's: a second SYN at once
	// draws none, one 500 ms later does.
	for try, wait := range []time.Duration{0, 0, 500 * time.Millisecond} {
		b.now += int64(wait)
		out := b.feed(true, b.fromClient(newISN, 0, rewrite.SYN, cTS0+50, 0), nil)
		if try == 1 {
			if len(out) != 0 {
				t.Fatalf("a second SYN at once drew %d frames", len(out))
			}
			continue
		}
		if len(out) != 1 || out[0].side != ClientSide || out[0].flags() != "A" ||
			rewrite.Seq(out[0].tcp.Seq) != b.pISN+1 || rewrite.Seq(out[0].tcp.Ack) != b.cISN+1 {
			t.Fatalf("SYN %d with another ISN: %d frames %+v, want one ACK to the client at seq %d ack %d",
				try, len(out), out, b.pISN+1, b.cISN+1)
		}
	}
	c := &b.tab.Stats
	if c.Drops[DropStaleSyn] != 3 || c.Counters[ChallengeAcks] != 2 {
		t.Fatalf("stale_syn %d, challenge_acks %d; want 3 and 2", c.Drops[DropStaleSyn], c.Counters[ChallengeAcks])
	}
	// The client's kernel answers from SYN-SENT with a reset at the ack.
	p, bk := b.split(b.feed(true, b.fromClient(b.cISN+1, 0, rewrite.RST, cTS0+51, 0), nil))
	if !p.tcp.RST || !bk.tcp.RST || b.flow().State() != StateClosed {
		t.Fatalf("the client's reset: primary %v backup %v, flow %v", p.tcp.RST, bk.tcp.RST, b.flow().State())
	}
	syn := b.feed(true, b.fromClient(newISN, 0, rewrite.SYN, cTS0+52, 0), nil)
	if p, bk := b.split(syn); p.flags() != "S" || bk.flags() != "S" || rewrite.Seq(p.tcp.Seq) != newISN {
		t.Fatalf("the client's next SYN: %s and %s seq %d, want SYNs at %d", p.flags(), bk.flags(), p.tcp.Seq, newISN)
	}

	// Half-open: nothing shown to the client, nothing to challenge.
	h := newBed(t, 100, 200, 300)
	h.feed(true, h.fromClient(h.cISN, 0, rewrite.SYN, cTS0, 0), nil)
	if out := h.feed(true, h.fromClient(newISN, 0, rewrite.SYN, cTS0+1, 0), nil); len(out) != 0 {
		t.Fatalf("another ISN during the handshake drew %d frames", len(out))
	}
}

// TestStaleSynMidReply: a SYN with another ISN while the primary's reply is
// out and the backup has not acknowledged the request. The challenge ACK
// carries what the client was sent and the gated ack, and changes nothing
// of the flow's own numbers; the client's reset at that ack is taken. The
// backup, behind the reply, drains (its reset held), and the client's next
// SYN waits for it; once the drain stalls past rstHoldMax the next SYN cuts
// it off and opens a new flow.
func TestStaleSynMidReply(t *testing.T) {
	for _, tc := range isns {
		t.Run(tc.name, func(t *testing.T) {
			b := withRequest(t, tc, 100)
			reply := bytes.Repeat([]byte("x"), 50)
			b.feed(false, b.fromServer(primaryIP, b.pISN+1, b.cISN+101, rewrite.ACK|rewrite.PSH, 500, pTS0+2, cTS0+2), reply)
			f := b.flow()
			seen, ts := f.seen, f.cli.tsLast
			b.now += int64(time.Millisecond)
			newISN := b.cISN + 12345
			out := b.feed(true, b.fromClient(newISN, 0, rewrite.SYN, cTS0+900, 0), nil)
			if len(out) != 1 || out[0].flags() != "A" || rewrite.Seq(out[0].tcp.Seq) != b.pISN+51 ||
				rewrite.Seq(out[0].tcp.Ack) != b.cISN+1 {
				t.Fatalf("challenge: %d frames %+v, want an ACK at seq %d ack %d (the backup has not acknowledged the request)",
					len(out), out, b.pISN+51, b.cISN+1)
			}
			if f.seen != seen || f.cli.tsLast != ts {
				t.Fatalf("the SYN moved the flow: seen %d -> %d, client TSval %d -> %d", seen, f.seen, ts, f.cli.tsLast)
			}
			out = b.feed(true, b.fromClient(b.cISN+1, 0, rewrite.RST, cTS0+901, 0), nil)
			if len(out) != 1 || out[0].flags() != "R" || [4]byte(out[0].ip.DstIP.To4()) != primaryIP || f.State() != StateClosed {
				t.Fatalf("the client's reset: %d frames %+v, flow %v; want it on the primary only, the backup draining", len(out), out, f.State())
			}
			if out := b.feed(true, b.fromClient(newISN, 0, rewrite.SYN, cTS0+902, 0), nil); len(out) != 0 {
				t.Fatalf("a new SYN while the backup drains drew %d frames", len(out))
			}
			b.now += rstHoldMax + int64(time.Millisecond)
			out = b.feed(true, b.fromClient(newISN, 0, rewrite.SYN, cTS0+903, 0), nil)
			var cut, syns int
			for _, s := range out {
				switch {
				case s.flags() == "R" && [4]byte(s.ip.DstIP.To4()) == backupIP:
					cut++
				case s.flags() == "S" && rewrite.Seq(s.tcp.Seq) == newISN:
					syns++
				}
			}
			if cut != 1 || syns != 2 || b.tab.Stats.Counters[DrainCutoffs] != 1 {
				t.Fatalf("after the drain stalled: %d resets to the backup, %d SYNs, %d cutoffs; want 1, 2, 1: %+v",
					cut, syns, b.tab.Stats.Counters[DrainCutoffs], out)
			}
		})
	}
}

// TestServerResetWindow: a server's reset counts when it lies within what
// the gateway acknowledged of the leg and the window after it. A backup
// behind the client resets at its own last byte (Linux closing a socket
// with requests unread, or answering for a socket gone): that must count,
// or the leg would go on gating the client's acks with no server behind it.
func TestServerResetWindow(t *testing.T) {
	cases := []struct {
		name   string
		seq    func(b *bed) rewrite.Seq
		counts bool
	}{
		{"lagging backup at its last byte", func(b *bed) rewrite.Seq { return b.bISN + 1 }, true},
		{"blind, far off", func(b *bed) rewrite.Seq { return b.bISN + 1 + 1<<30 }, false},
	}
	for _, tc := range cases {
		for _, is := range isns {
			t.Run(tc.name+"/"+is.name, func(t *testing.T) {
				b := withRequest(t, is, 100)
				b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+101, rewrite.ACK, 125, bTS0+1, cTS0+2), nil)
				b.feed(false, b.fromServer(primaryIP, b.pISN+1, b.cISN+101, rewrite.ACK|rewrite.PSH, 500, pTS0+1, cTS0+2), bytes.Repeat([]byte("x"), 1000))
				b.feed(true, b.fromClient(b.cISN+101, b.pISN+1001, rewrite.ACK, cTS0+3, pTS0+1), nil)
				// The backup has sent none of its reply; the client has all
				// of the primary's.
				b.feed(false, b.fromServer(backupIP, tc.seq(b), 0, rewrite.RST, 0, 0, 0), nil)
				st := &b.tab.Stats
				counted := st.Counters[BackupRSTs] == 1 && b.flow().Protection() == Unprotected
				if counted != tc.counts || (st.Drops[DropOffWindowRST] == 0) != tc.counts {
					t.Fatalf("backup_rsts %d, off-window drops %d, protection %v; want the reset counted: %v",
						st.Counters[BackupRSTs], st.Drops[DropOffWindowRST], b.flow().Protection(), tc.counts)
				}
			})
		}
	}
}

// TestLateServerSegmentsAfterClientReset: the client resets while the backup
// lags its reply. The primary gets the reset at once; the backup's waits
// until it has sent the reply the primary sent, its data acknowledged by the
// gateway meanwhile, so it reads every request the primary answered. Its
// own reset afterwards does not count as a lost leg.
func TestLateServerSegmentsAfterClientReset(t *testing.T) {
	reply := bytes.Repeat([]byte("r"), 600)
	resetWhileLagging := func(t *testing.T) *bed {
		b := newBed(t, 100, 200, 300)
		b.handshake()
		b.feed(false, b.fromServer(primaryIP, b.pISN+1, b.cISN+1, rewrite.ACK, 500, pTS0+1, cTS0), reply)
		b.feed(true, b.fromClient(b.cISN+1, b.pISN+601, rewrite.ACK, cTS0+1, pTS0+1), nil)
		out := b.feed(true, b.fromClient(b.cISN+1, b.pISN+601, rewrite.RST|rewrite.ACK, cTS0+2, pTS0+1), nil)
		if len(out) != 1 || out[0].flags() != "AR" && out[0].flags() != "R" || [4]byte(out[0].ip.DstIP.To4()) != primaryIP {
			t.Fatalf("client's reset: %d frames, want it for the primary alone", len(out))
		}
		return b
	}
	wantRST := func(b *bed, out []seg) {
		b.t.Helper()
		if len(out) != 1 || out[0].side != ServerSide || out[0].flags() != "R" || rewrite.Seq(out[0].tcp.Seq) != b.cISN+1 ||
			[4]byte(out[0].ip.DstIP.To4()) != backupIP {
			b.t.Fatalf("%+v, want one RST to the backup", out)
		}
	}
	// fillOutput leaves b's output without room, as a busy batch would.
	fillOutput := func(b *bed) {
		b.out.Reset()
		for b.out.room(1) {
			b.out.emit(ClientSide, b.out.buf()[:0])
		}
	}
	// sweepFull runs a sweep with a full output: the flow must stay for
	// the reset it still owes, which the next tick sends.
	sweepFull := func(b *bed, what string) {
		b.t.Helper()
		b.tab.nextSweep = 0
		fillOutput(b)
		if more := b.tab.Tick(b.now, b.out); !more || b.flow() == nil || b.tab.nextSweep <= b.now {
			b.t.Fatalf("%s with a full output: more %v, flow kept %v, swept %v; want more, the flow kept for its reset",
				what, more, b.flow() != nil, b.tab.nextSweep > b.now)
		}
		wantRST(b, b.tick(0))
		if n := b.tab.Stats.Counters[DrainCutoffs]; n != 1 {
			b.t.Fatalf("drain_cutoffs %d, want 1", n)
		}
	}
	t.Run("reset once the backup sent as far", func(t *testing.T) {
		b := resetWhileLagging(t)
		half := reply[:300]
		out := b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+1, rewrite.ACK, 125, bTS0+1, cTS0), half)
		if len(out) != 1 || out[0].flags() != "A" || rewrite.Seq(out[0].tcp.Ack) != b.bISN+301 || [4]byte(out[0].ip.DstIP.To4()) != backupIP {
			t.Fatalf("backup's first 300 bytes after the client's reset: %+v, want them acknowledged", out)
		}
		wantRST(b, b.feed(false, b.fromServer(backupIP, b.bISN+301, b.cISN+1, rewrite.ACK, 125, bTS0+2, cTS0), half))
		if out := b.feed(false, b.fromServer(backupIP, b.bISN+601, 0, rewrite.RST, 0, 0, 0), nil); len(out) != 0 {
			t.Fatalf("backup's reset after the client's: %d frames out", len(out))
		}
		if b.flow().Protection() != Protected || b.tab.Stats.Counters[FlowsUnprotected] != 0 || b.tab.Stats.Counters[BackupRSTs] != 0 {
			t.Fatalf("a closed flow lost its backup leg: %v, %d unprotected, %d backup resets",
				b.flow().Protection(), b.tab.Stats.Counters[FlowsUnprotected], b.tab.Stats.Counters[BackupRSTs])
		}
		if b.tab.Stats.Drops[DropFlowClosed] != 3 {
			t.Fatalf("%d late segments counted as flow_closed, want 3", b.tab.Stats.Drops[DropFlowClosed])
		}
	})
	t.Run("reset once the backup stops catching up", func(t *testing.T) {
		b := resetWhileLagging(t)
		// Each step comes after most of the bound: progress renews it.
		for k, step := range [][]byte{reply[:200], reply[200:400]} {
			b.now += rstHoldMax - 1
			seq := b.bISN + 1 + rewrite.Seq(200*k)
			out := b.feed(false, b.fromServer(backupIP, seq, b.cISN+1, rewrite.ACK, 125, bTS0+1, cTS0), step)
			if len(out) != 1 || out[0].flags() != "A" || rewrite.Seq(out[0].tcp.Ack) != seq+200 {
				t.Fatalf("backup's bytes %d-%d, %v after the last: %+v, want them acknowledged",
					200*k, 200*k+200, time.Duration(rstHoldMax-1), out)
			}
		}
		// A retransmission after the bound is no progress.
		b.now += rstHoldMax + 1
		wantRST(b, b.feed(false, b.fromServer(backupIP, b.bISN+201, b.cISN+1, rewrite.ACK, 125, bTS0+2, cTS0), reply[200:400]))
		if n := b.tab.Stats.Counters[DrainCutoffs]; n != 1 {
			t.Fatalf("drain_cutoffs %d, want 1", n)
		}
	})
	t.Run("reset once the backup goes silent", func(t *testing.T) {
		// No segment of the backup's comes to end the drain: the sweep
		// does, once it has been quiet past the bound, and not before.
		b := resetWhileLagging(t)
		if out := b.tick(time.Duration(rstHoldMax) / 2); len(out) != 0 {
			t.Fatalf("half the bound after the client's reset: %+v, want nothing", out)
		}
		b.tab.nextSweep = 0 // a sweep at the next tick
		if out := b.tick(0); len(out) != 0 {
			t.Fatalf("a sweep within the bound: %+v, want nothing", out)
		}
		wantRST(b, b.tick(time.Duration(sweepEvery)))
		if n := b.tab.Stats.Counters[DrainCutoffs]; n != 1 {
			t.Fatalf("drain_cutoffs %d, want 1", n)
		}
		if out := b.tick(time.Duration(sweepEvery)); len(out) != 0 {
			t.Fatalf("the sweep after the cutoff: %+v, want nothing", out)
		}
	})
	t.Run("a drain still going outlasts the time-wait", func(t *testing.T) {
		b := resetWhileLagging(t)
		b.tab.cfg.TimeWaitTimeout = 1500 * time.Millisecond
		b.now += int64(900 * time.Millisecond)
		b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+1, rewrite.ACK, 125, bTS0+1, cTS0), reply[:200])
		b.tab.nextSweep = 0
		if out := b.tick(700 * time.Millisecond); len(out) != 0 || b.flow() == nil {
			t.Fatalf("a sweep past the time-wait, 0.7 s after the backup's last progress: %+v, flow kept %v; want nothing sent, the flow kept",
				out, b.flow() != nil)
		}
		wantRST(b, b.tick(time.Duration(sweepEvery)+time.Millisecond))
		if b.flow() != nil {
			t.Fatal("the flow outlived its cut-off drain and its time-wait")
		}
	})
	t.Run("the client's segments do not keep a stalled drain going", func(t *testing.T) {
		// The client's segments after its reset say nothing of the
		// backup's progress: the first sweep past the bound cuts it off.
		b := resetWhileLagging(t)
		rsts, at := 0, 0
		for i := 1; i <= 40 && b.flow() != nil; i++ { // 36 s; the time-wait is 30 s
			b.now += int64(900 * time.Millisecond)
			b.feed(true, b.fromClient(b.cISN+1, b.pISN+601, rewrite.ACK, cTS0+3, pTS0+1), nil)
			b.tab.nextSweep = 0
			for _, s := range b.tick(0) {
				if s.flags() == "R" && [4]byte(s.ip.DstIP.To4()) == backupIP {
					rsts, at = rsts+1, i
				}
			}
		}
		if rsts != 1 || at != 2 || b.flow() != nil || b.tab.Stats.Counters[DrainCutoffs] != 1 {
			t.Fatalf("a client ACK every 0.9 s: %d resets to the backup, the first at sweep %d, flow kept %v, drain_cutoffs %d; want 1 at sweep 2 (1.8 s), the flow gone by 36 s, 1",
				rsts, at, b.flow() != nil, b.tab.Stats.Counters[DrainCutoffs])
		}
	})
	t.Run("a drain that trickles ends after two time-waits", func(t *testing.T) {
		// A backup sending a byte every 0.9 s is progress each time; its
		// flow still leaves, the backup reset, two time-waits on.
		b := resetWhileLagging(t)
		wait := b.tab.cfg.TimeWaitTimeout
		rsts := 0
		for i := 0; i < 80 && b.flow() != nil; i++ { // up to 72 s; the time-wait is 30 s
			b.now += int64(900 * time.Millisecond)
			for _, s := range b.feed(false, b.fromServer(backupIP, b.bISN+1+rewrite.Seq(i), b.cISN+1, rewrite.ACK, 125, bTS0+1, cTS0), reply[i:i+1]) {
				if s.flags() == "R" {
					rsts++
				}
			}
			b.tab.nextSweep = 0
			for _, s := range b.tick(0) {
				if s.flags() == "R" && [4]byte(s.ip.DstIP.To4()) == backupIP {
					rsts++
				}
			}
			if kept := b.flow() != nil; kept != (time.Duration(i+1)*900*time.Millisecond <= 2*wait) {
				t.Fatalf("%v after the client's reset: flow kept %v, %d resets to the backup", time.Duration(i+1)*900*time.Millisecond, kept, rsts)
			}
		}
		if rsts != 1 || b.flow() != nil || b.tab.Stats.Counters[DrainCutoffs] != 1 {
			t.Fatalf("72 s after the client's reset: %d resets to the backup, flow kept %v, drain_cutoffs %d; want 1, gone, 1",
				rsts, b.flow() != nil, b.tab.Stats.Counters[DrainCutoffs])
		}
	})
	t.Run("a cut-off the sweep had no room for goes at the next tick", func(t *testing.T) {
		b := resetWhileLagging(t)
		// A tick with room first: the closed flow leaves the lead queue,
		// whose work would otherwise fill the output before the sweep.
		if out := b.tick(b.tab.cfg.LeadPause); len(out) != 0 {
			t.Fatalf("a tick within the bound: %+v, want nothing", out)
		}
		b.now += rstHoldMax
		sweepFull(b, "a sweep past the stall bound")
		if out := b.tick(0); len(out) != 0 {
			t.Fatalf("the tick after: %+v, want nothing", out)
		}
		b.tab.nextSweep = 0
		if out := b.tick(b.tab.cfg.TimeWaitTimeout); len(out) != 0 || b.flow() != nil {
			t.Fatalf("the sweep past the time-wait: %+v, flow kept %v; want nothing sent, the flow gone", out, b.flow() != nil)
		}
	})
	t.Run("a flow at the drain's cap keeps its place until its reset is out", func(t *testing.T) {
		b := resetWhileLagging(t)
		if out := b.tick(b.tab.cfg.LeadPause); len(out) != 0 {
			t.Fatalf("a tick within the bound: %+v, want nothing", out)
		}
		// The backup still trickles its reply as the cap comes.
		closed, wait := b.now-int64(b.tab.cfg.LeadPause), int64(b.tab.cfg.TimeWaitTimeout)
		b.now = closed + 2*wait
		b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+1, rewrite.ACK, 125, bTS0+1, cTS0), reply[:1])
		b.now++
		sweepFull(b, "the sweep at the cap")
		b.tab.nextSweep = 0
		if out := b.tick(0); len(out) != 0 || b.flow() != nil {
			t.Fatalf("the next sweep: %+v, flow kept %v; want nothing sent, the flow gone", out, b.flow() != nil)
		}
	})
	t.Run("a backup that caught up as the output filled is not counted as cut off", func(t *testing.T) {
		b := resetWhileLagging(t)
		spec := b.fromServer(backupIP, b.bISN+1, b.cISN+1, rewrite.ACK, 125, bTS0+1, cTS0)
		n := rewrite.Build(b.buf, &spec, &b.pkt)
		n = withPayload(t, b.buf, n, reply)
		b.pkt.Parse(b.buf[:n], false, true)
		fillOutput(b)
		b.tab.HandleServer(b.now, &b.pkt, b.out)
		// The next sweep sends its reset, well within the stall bound.
		b.tab.nextSweep = 0
		wantRST(b, b.tick(time.Millisecond))
		if n := b.tab.Stats.Counters[DrainCutoffs]; n != 0 {
			t.Fatalf("drain_cutoffs %d, want 0: the backup had sent the whole reply", n)
		}
	})
	t.Run("a segment far outside the window does not end the drain", func(t *testing.T) {
		b := resetWhileLagging(t)
		// Past the whole reply, had it been taken: a reset would follow.
		if out := b.feed(false, b.fromServer(backupIP, b.bISN+1+1<<30, b.cISN+1, rewrite.ACK, 125, bTS0+1, cTS0), reply[:300]); len(out) != 0 {
			t.Fatalf("bogus segment: %+v, want it dropped", out)
		}
		if n := b.tab.Stats.Drops[DropOutOfWindow]; n != 1 {
			t.Fatalf("out_of_window drops %d, want 1", n)
		}
		out := b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+1, rewrite.ACK, 125, bTS0+1, cTS0), reply[:300])
		if len(out) != 1 || out[0].flags() != "A" || rewrite.Seq(out[0].tcp.Ack) != b.bISN+301 {
			t.Fatalf("backup's first 300 bytes after a bogus segment: %+v, want them acknowledged", out)
		}
	})
	t.Run("a held ACK is paid to the draining backup", func(t *testing.T) {
		b := newBedHolding(t, 100, 200, 300, 200*time.Microsecond)
		b.handshake()
		b.feed(false, b.fromServer(primaryIP, b.pISN+1, b.cISN+1, rewrite.ACK, 500, pTS0+1, cTS0), reply)
		b.feed(true, b.fromClient(b.cISN+1, b.pISN+601, rewrite.ACK, cTS0+1, pTS0+1), nil)
		// The backup's first 300 bytes: a debt under two segments, held.
		if out := b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+1, rewrite.ACK, 125, bTS0+1, cTS0), reply[:300]); len(out) != 0 {
			t.Fatalf("backup's small debt: %+v, want it held", out)
		}
		// A reset without ACK: it pays neither leg's held debt. Only the
		// draining backup is owed one; the primary was reset.
		out := b.feed(true, b.fromClient(b.cISN+1, 0, rewrite.RST, cTS0+2, 0), nil)
		if len(out) != 1 || [4]byte(out[0].ip.DstIP.To4()) != primaryIP {
			t.Fatalf("client's reset: %+v, want it for the primary alone", out)
		}
		out = b.tick(time.Millisecond)
		if len(out) != 1 || out[0].flags() != "A" || [4]byte(out[0].ip.DstIP.To4()) != backupIP ||
			rewrite.Seq(out[0].tcp.Ack) != b.bISN+301 {
			t.Fatalf("after the hold: %+v, want the backup's 300 bytes acknowledged", out)
		}
	})
	t.Run("the backup's late ack of the last request moves the drain's ACKs", func(t *testing.T) {
		b := newBed(t, 100, 200, 300)
		b.handshake()
		req := bytes.Repeat([]byte("q"), 43)
		b.feed(true, b.fromClient(b.cISN+1, b.pISN+1, rewrite.ACK|rewrite.PSH, cTS0+1, pTS0), req)
		b.feed(false, b.fromServer(primaryIP, b.pISN+1, b.cISN+44, rewrite.ACK, 500, pTS0+1, cTS0+1), reply)
		b.feed(true, b.fromClient(b.cISN+44, b.pISN+601, rewrite.ACK, cTS0+2, pTS0+1), nil)
		b.feed(true, b.fromClient(b.cISN+44, b.pISN+601, rewrite.RST|rewrite.ACK, cTS0+3, pTS0+1), nil)
		// The backup acknowledges the request only now, with its reply.
		out := b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+44, rewrite.ACK, 125, bTS0+1, cTS0+1), reply[:300])
		if len(out) != 1 || out[0].flags() != "A" || rewrite.Seq(out[0].tcp.Seq) != b.cISN+44 || rewrite.Seq(out[0].tcp.Ack) != b.bISN+301 {
			t.Fatalf("%+v, want an ACK of the backup's 300 bytes from the request's end (seq %d)", out, b.cISN+44)
		}
		out = b.feed(false, b.fromServer(backupIP, b.bISN+301, b.cISN+44, rewrite.ACK, 125, bTS0+2, cTS0+1), reply[300:])
		if len(out) != 1 || out[0].flags() != "R" || rewrite.Seq(out[0].tcp.Seq) != b.cISN+44 {
			t.Fatalf("%+v, want the backup's reset at the request's end (seq %d)", out, b.cISN+44)
		}
	})
	t.Run("no lag: both reset at once", func(t *testing.T) {
		b := newBed(t, 100, 200, 300)
		b.handshake()
		b.feed(false, b.fromServer(primaryIP, b.pISN+1, b.cISN+1, rewrite.ACK, 500, pTS0+1, cTS0), reply)
		b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+1, rewrite.ACK, 125, bTS0+1, cTS0), reply)
		b.split(b.feed(true, b.fromClient(b.cISN+1, b.pISN+601, rewrite.RST|rewrite.ACK, cTS0+2, pTS0+1), nil))
		// Anything the backup still sends gets the client kernel's answer.
		wantRST(b, b.feed(false, b.fromServer(backupIP, b.bISN+601, b.cISN+1, rewrite.ACK|rewrite.FIN, 125, bTS0+2, cTS0), nil))
	})
}

func TestCaps(t *testing.T) {
	tab := New(Config{Services: []Service{{VIP: vip, Port: vport}}, Servers: [2][4]byte{primaryIP, backupIP}, MaxHalfOpen: 3})
	out := NewOutput(2048)
	buf := make([]byte, 2048)
	var p rewrite.Packet
	syn := func(now int64, port int) {
		s := rewrite.Spec{Src: clientIP, Dst: vip, SrcPort: uint16(port), DstPort: vport, Seq: 1, Flags: rewrite.SYN, WScale: -1}
		n := rewrite.Build(buf, &s, &p)
		p.Parse(buf[:n], false, true)
		out.Reset()
		tab.HandleClient(now, &p, out)
	}
	present := func(port int) bool {
		return tab.Lookup(Key{Client: clientIP, CPort: uint16(port), VIP: vip, VPort: vport}) != nil
	}
	for i := 0; i < 4; i++ {
		syn(0, 1000+i)
	}
	// At the cap, flows younger than evictAge keep their place: the SYN
	// beyond is refused.
	if tab.Len() != 3 || tab.Stats.Drops[DropHalfOpenCap] != 1 || present(1003) {
		t.Fatalf("half-open cap: %d flows, %d refused, newest present %v", tab.Len(), tab.Stats.Drops[DropHalfOpenCap], present(1003))
	}
	// Once they are old enough, the oldest make room for new SYNs: a
	// flood's flows turn over and a new client's SYN finds a place.
	syn(evictAge, 1004)
	syn(evictAge, 1005)
	if tab.Len() != 3 || tab.HalfOpen() != 3 || tab.Stats.Counters[HalfOpenEvicted] != 2 {
		t.Fatalf("after evictAge: %d flows (%d half-open), %d evicted", tab.Len(), tab.HalfOpen(), tab.Stats.Counters[HalfOpenEvicted])
	}
	for port, want := range map[int]bool{1000: false, 1001: false, 1002: true, 1004: true, 1005: true} {
		if present(port) != want {
			t.Errorf("flow of port %d present %v, want %v: the oldest go first", port, present(port), want)
		}
	}
	out.Reset()
	tab.Tick(evictAge+int64(11*time.Second), out)
	if tab.Len() != 0 || tab.HalfOpen() != 0 || len(tab.synQueue) != 0 {
		t.Fatalf("half-open flows not expired: %d (%d half-open, %d queued)", tab.Len(), tab.HalfOpen(), len(tab.synQueue))
	}
}

// TestNoAllocsPerSegment: the steady-state per-segment path allocates nothing.
func TestNoAllocsPerSegment(t *testing.T) {
	b := newBed(t, 1, 2, 3)
	b.handshake()
	cli, srv := b.frames()
	allocs := testing.AllocsPerRun(1000, func() { b.step(cli, srv) })
	if allocs != 0 {
		t.Fatalf("%.1f allocations per client+server segment, want 0", allocs)
	}
}

// TestNoAllocsInDownload: a protected download, where both servers send new
// reply bytes that are hashed, compared and held for replay, and the client
// acknowledges them, allocates nothing per segment either.
func TestNoAllocsInDownload(t *testing.T) {
	b := newBed(t, 1, 2, 3)
	b.handshake()
	const n = 1400
	data := bytes.Repeat([]byte("d"), n)
	build := func(s rewrite.Spec, payload []byte) []byte {
		s.Window = 0xffff
		l := rewrite.Build(b.buf, &s, &b.pkt)
		if len(payload) > 0 {
			l = withPayload(t, b.buf, l, payload)
		}
		return append([]byte(nil), b.buf[:l]...)
	}
	pri := build(b.fromServer(primaryIP, b.pISN+1, b.cISN+1, rewrite.ACK, 0, pTS0+1, cTS0), data)
	bak := build(b.fromServer(backupIP, b.bISN+1, b.cISN+1, rewrite.ACK, 0, bTS0+1, cTS0), data)
	ack := build(b.fromClient(b.cISN+1, b.pISN+1, rewrite.ACK, cTS0+1, pTS0+1), nil)
	const seqAt, ackAt = rewrite.EthLen + 20 + 4, rewrite.EthLen + 20 + 8
	var sent uint32
	set := func(frame []byte, at int, v rewrite.Seq) []byte {
		binary.BigEndian.PutUint32(frame[at:], uint32(v))
		return frame
	}
	step := func() {
		b.replay(set(pri, seqAt, b.pISN+1+rewrite.Seq(sent)), false)
		b.replay(set(bak, seqAt, b.bISN+1+rewrite.Seq(sent)), false)
		sent += n
		b.replay(set(ack, ackAt, b.pISN+1+rewrite.Seq(sent)), true)
		b.out.Reset()
		b.tab.Flush(b.out)
	}
	before := b.tab.Stats
	allocs := testing.AllocsPerRun(2000, step)
	if allocs != 0 {
		t.Fatalf("%.2f allocations per segment of each server and client ACK, want 0", allocs)
	}
	// The loop did what a download does: every reply segment reached the
	// client, and the two replies were compared block by block.
	runs := uint64(2001)
	if got := b.tab.Stats.Counters[ToClient] - before.Counters[ToClient]; got < runs {
		t.Errorf("%d frames to the client for %d reply segments", got, runs)
	}
	if got := b.tab.Stats.Counters[BlocksCompared] - before.Counters[BlocksCompared]; got < runs*n/1024 {
		t.Errorf("%d blocks compared, want at least %d", got, runs*n/1024)
	}
	if got := b.tab.Stats.Counters[BlocksDiffered] - before.Counters[BlocksDiffered]; got != 0 {
		t.Errorf("%d blocks differed between identical replies", got)
	}
}

func BenchmarkSegment(bb *testing.B) {
	t := &testing.T{}
	b := newBed(t, 1, 2, 3)
	b.handshake()
	cli, srv := b.frames()
	bb.ReportAllocs()
	bb.ResetTimer()
	for i := 0; i < bb.N; i++ {
		b.step(cli, srv)
	}
}

// frames builds a client data segment and a primary data segment to replay.
func (b *bed) frames() (cli, srv []byte) {
	data := bytes.Repeat([]byte("d"), 1400)
	s := b.fromClient(b.cISN+1, b.pISN+1, rewrite.ACK, cTS0+1, pTS0)
	n := rewrite.Build(b.buf, &s, &b.pkt)
	n = withPayload(b.t, b.buf, n, data)
	cli = append([]byte(nil), b.buf[:n]...)
	s = b.fromServer(primaryIP, b.pISN+1, b.cISN+1, rewrite.ACK, 500, pTS0+1, cTS0+1)
	n = rewrite.Build(b.buf, &s, &b.pkt)
	n = withPayload(b.t, b.buf, n, data)
	srv = append([]byte(nil), b.buf[:n]...)
	return cli, srv
}

// step replays one segment each way, as the datapath would.
func (b *bed) step(cli, srv []byte) {
	b.replay(cli, true)
	b.replay(srv, false)
}

// replay hands a built frame to the table as the datapath would, without
// allocating: copied into the bed's buffer, parsed, handled.
func (b *bed) replay(frame []byte, fromClient bool) {
	copy(b.buf, frame)
	b.pkt.Parse(b.buf[:len(frame)], false, false)
	b.out.Reset()
	if fromClient {
		b.tab.HandleClient(b.now, &b.pkt, b.out)
	} else {
		b.tab.HandleServer(b.now, &b.pkt, b.out)
	}
}

// TestClientFinWaitsForLaggingBackup: a server reading end-of-stream while
// still replying aborts the reply, so the backup gets the client's FIN only
// once it has sent what the client acknowledged.
func TestClientFinWaitsForLaggingBackup(t *testing.T) {
	for _, tc := range isns {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t, tc.cISN, tc.pISN, tc.bISN)
			b.handshake()
			reply := bytes.Repeat([]byte("z"), 1000)
			b.feed(false, b.fromServer(primaryIP, b.pISN+1, b.cISN+1, rewrite.ACK, 500, pTS0+1, cTS0), reply)
			b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+1, rewrite.ACK, 125, bTS0+1, cTS0), reply[:400])
			// The client has the whole reply from the primary and closes.
			out := b.feed(true, b.fromClient(b.cISN+1, b.pISN+1001, rewrite.ACK|rewrite.FIN, cTS0+1, pTS0+1), nil)
			p, bk := b.split(out)
			if !p.tcp.FIN || bk.tcp.FIN {
				t.Fatalf("FIN to primary %v, to the lagging backup %v; want true, false", p.tcp.FIN, bk.tcp.FIN)
			}
			if rewrite.Seq(bk.tcp.Ack) != b.bISN+401 {
				t.Fatalf("backup ack %d, want %d", bk.tcp.Ack, b.bISN+401)
			}
			out = b.feed(false, b.fromServer(backupIP, b.bISN+401, b.cISN+1, rewrite.ACK, 125, bTS0+2, cTS0), reply[400:])
			var fin []seg
			for _, s := range out {
				if s.side == ServerSide && s.tcp.FIN {
					fin = append(fin, s)
				}
			}
			if len(fin) != 1 || rewrite.Seq(fin[0].tcp.Seq) != b.cISN+1 || rewrite.Seq(fin[0].tcp.Ack) != b.bISN+1001 ||
				[4]byte(fin[0].ip.DstIP.To4()) != backupIP {
				t.Fatalf("held FIN delivered as %+v", fin)
			}
		})
	}
}

// TestUnknownConnectionsReset: after a restart the gateway knows no flows;
// both sides' segments of old connections get a prompt reset, within budget.
func TestUnknownConnectionsReset(t *testing.T) {
	b := newBed(t, 1, 2, 3)
	b.tab.cfg.MaxResetsPerSecond = 3
	b.tab.resetsLeft = 3
	out := b.feed(true, b.fromClient(500, 9000, rewrite.ACK, cTS0, pTS0), []byte("late request"))
	if len(out) != 1 || out[0].side != ClientSide || out[0].flags() != "R" || out[0].tcp.Seq != 9000 ||
		[4]byte(out[0].ip.SrcIP.To4()) != vip || [4]byte(out[0].ip.DstIP.To4()) != clientIP {
		t.Fatalf("client segment of an unknown flow: %+v", out)
	}
	out = b.feed(false, b.fromServer(backupIP, 7000, 500, rewrite.ACK, 100, bTS0, cTS0), []byte("late reply"))
	if len(out) != 2 || out[0].side != ServerSide || out[0].flags() != "R" || out[0].tcp.Seq != 500 ||
		[4]byte(out[0].ip.SrcIP.To4()) != clientIP || [4]byte(out[0].ip.DstIP.To4()) != backupIP {
		t.Fatalf("server segment of an unknown flow: %+v", out)
	}
	// Its client, which may be waiting for data and so sending nothing, is
	// made to answer: a byte far below its window (a data segment escapes
	// Linux's rate limit on answers), acknowledging what it never sent.
	if p := out[1]; p.side != ClientSide || p.flags() != "A" || len(p.payload) != 1 || p.tcp.Seq != uint32(7000+3<<30) ||
		p.tcp.Ack != uint32(500+1<<30) ||
		[4]byte(p.ip.SrcIP.To4()) != vip || [4]byte(p.ip.DstIP.To4()) != clientIP || p.tcp.DstPort != cport {
		t.Fatalf("probe of the unknown flow's client: %s seq %d ack %d, %d bytes, from %v to %v:%d",
			p.flags(), p.tcp.Seq, p.tcp.Ack, len(p.payload), p.ip.SrcIP, p.ip.DstIP, p.tcp.DstPort)
	}
	if out := b.feed(true, b.fromClient(500, 9000, rewrite.ACK, cTS0, pTS0), nil); len(out) != 0 {
		t.Fatal("reset budget exceeded")
	}
	if out := b.feed(true, b.fromClient(500, 9000, rewrite.RST, cTS0, pTS0), nil); len(out) != 0 {
		t.Fatal("a reset answered with a reset")
	}
	b.now += int64(time.Second)
	if out := b.feed(true, b.fromClient(500, 9000, rewrite.ACK, cTS0, pTS0), nil); len(out) != 1 {
		t.Fatal("budget not renewed after a second")
	}
}

// TestHostileClientSegments: segments no client sends, or that a blind
// attacker sends without knowing the connection's numbers, are dropped
// under their reason before they change the flow; a zero-window probe, which
// a real client sends, is forwarded.
func TestHostileClientSegments(t *testing.T) {
	for _, tc := range isns {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t, tc.cISN, tc.pISN, tc.bISN)
			b.handshake()
			data := []byte("GET / HTTP/1.1\r\n\r\n")
			b.split(b.feed(true, b.fromClient(b.cISN+1, b.pISN+1, rewrite.ACK|rewrite.PSH, cTS0+2, pTS0), data))
			next := b.cISN + 1 + rewrite.Seq(len(data))
			cases := []struct {
				name    string
				seq     rewrite.Seq
				ack     rewrite.Seq
				flags   uint8
				payload []byte
				want    Drop
			}{
				{"SYN+FIN", b.cISN, 0, rewrite.SYN | rewrite.FIN, nil, DropBadFlags},
				{"SYN+RST", b.cISN, 0, rewrite.SYN | rewrite.RST, nil, DropBadFlags},
				{"FIN without ACK", next, 0, rewrite.FIN, nil, DropBadFlags},
				{"no flags", next, 0, 0, []byte("x"), DropBadFlags},
				{"SYN with data", b.cISN, 0, rewrite.SYN, []byte("early"), DropSynData},
				{"data beyond the window", next + 1<<30, b.pISN + 1, rewrite.ACK, []byte("x"), DropOutOfWindow},
				{"data far behind", next - 1<<30, b.pISN + 1, rewrite.ACK, []byte("x"), DropOutOfWindow},
				{"ack of unsent bytes", next, b.pISN + 1 + 1<<20, rewrite.ACK, nil, DropAckUnsent},
			}
			for _, c := range cases {
				before := b.tab.Stats.Drops[c.want]
				// A TSval far ahead: had the segment been taken, the
				// servers would see it echoed and reject the client's next.
				out := b.feed(true, b.fromClient(c.seq, c.ack, c.flags, cTS0+1<<30, pTS0), c.payload)
				if len(out) != 0 {
					t.Errorf("%s: %d frames out, want none", c.name, len(out))
				}
				if b.tab.Stats.Drops[c.want] != before+1 {
					t.Errorf("%s: not counted as %v", c.name, c.want)
				}
			}
			if f := b.flow(); f.cli.tsLast != cTS0+2 || f.cli.nxt != next {
				t.Fatalf("dropped segments changed the flow: client TSval %d, next %d; want %d, %d",
					f.cli.tsLast, f.cli.nxt, cTS0+2, next)
			}
			// A zero-window probe: one old byte below the servers' ack.
			p, bk := b.split(b.feed(true, b.fromClient(next-1, b.pISN+1, rewrite.ACK, cTS0+3, pTS0), []byte("\n")))
			if len(p.payload) != 1 || len(bk.payload) != 1 {
				t.Fatal("zero-window probe not forwarded whole")
			}
		})
	}
}

// TestHostileServerSegments: a server segment far off the window the leg
// was given, or acknowledging bytes the client never sent, is dropped before
// it moves the leg's numbers; a bogus backup segment far ahead used to make
// the backup look ahead of the primary, so the primary's FIN was taken for a
// premature one and the flow moved to a backup that had sent nothing of it.
func TestHostileServerSegments(t *testing.T) {
	for _, tc := range isns {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t, tc.cISN, tc.pISN, tc.bISN)
			b.handshake()
			req := []byte("GET / HTTP/1.1\r\n\r\n")
			b.split(b.feed(true, b.fromClient(b.cISN+1, b.pISN+1, rewrite.ACK|rewrite.PSH, cTS0+2, pTS0), req))
			next := b.cISN + 1 + rewrite.Seq(len(req))
			cases := []struct {
				name string
				ip   [4]byte
				seq  rewrite.Seq
				ack  rewrite.Seq
				want Drop
			}{
				{"backup data far ahead", backupIP, b.bISN + 1 + 1<<30, next, DropOutOfWindow},
				{"primary data far behind", primaryIP, b.pISN + 1 - 1<<30, next, DropOutOfWindow},
				{"primary ack of unsent client bytes", primaryIP, b.pISN + 1, next + 1<<20, DropAckUnsent},
			}
			for _, c := range cases {
				before := b.tab.Stats.Drops[c.want]
				out := b.feed(false, b.fromServer(c.ip, c.seq, c.ack, rewrite.ACK|rewrite.PSH, 500, pTS0+1, cTS0+2), []byte("bogus"))
				if len(out) != 0 || b.tab.Stats.Drops[c.want] != before+1 {
					t.Errorf("%s: %d frames out, counted %v %d times", c.name, len(out), c.want, b.tab.Stats.Drops[c.want]-before)
				}
			}
			f := b.flow()
			if f.legs[1].sndNxt != b.bISN+1 || f.legs[0].sndNxt != b.pISN+1 || f.legs[0].ack != b.cISN+1 {
				t.Fatalf("dropped segments moved the legs: backup sent to %d, primary to %d, primary ack %d",
					f.legs[1].sndNxt-b.bISN, f.legs[0].sndNxt-b.pISN, f.legs[0].ack-b.cISN)
			}
			// Both servers reply and close alike: the FIN reaches the client
			// from the primary, no takeover.
			reply := []byte("HTTP/1.1 200 OK\r\n\r\n")
			b.feed(false, b.fromServer(backupIP, b.bISN+1, next, rewrite.ACK|rewrite.PSH|rewrite.FIN, 125, bTS0+2, cTS0+2), reply)
			out := b.feed(false, b.fromServer(primaryIP, b.pISN+1, next, rewrite.ACK|rewrite.PSH|rewrite.FIN, 500, pTS0+2, cTS0+2), reply)
			if len(out) != 1 || !out[0].tcp.FIN || !bytes.Equal(out[0].payload, reply) || b.tab.Stats.Counters[Takeovers] != 0 {
				t.Fatalf("the reply and FIN: %d frames, %d takeovers", len(out), b.tab.Stats.Counters[Takeovers])
			}
		})
	}
}

// TestOffloadCarried: a client super-frame parsed under KeepOffloads
// reaches both servers asking the kernel for its segmentation and checksum,
// and each copy's checksum, completed as the kernel would, is valid for
// the leg's rewritten headers.
func TestOffloadCarried(t *testing.T) {
	b := newBed(t, 1000, 5000, 900000)
	b.handshake()
	b.out = NewOutput(8192)
	buf := make([]byte, 8192)
	s := b.fromClient(b.cISN+1, b.pISN+1, rewrite.ACK|rewrite.PSH, cTS0+2, pTS0)
	n := withPayload(t, buf, rewrite.Build(buf, &s, &b.pkt), bytes.Repeat([]byte("upload"), 700))
	if r := b.pkt.Parse(buf[:n], true, false); r != rewrite.OK {
		t.Fatalf("Parse: %v", r)
	}
	b.pkt.KeepOffloads(1400)
	b.out.Reset()
	b.tab.HandleClient(b.now, &b.pkt, b.out)
	if len(b.out.Frames) != 2 {
		t.Fatalf("%d frames, want one per server", len(b.out.Frames))
	}
	for i, o := range b.out.Frames {
		want := rewrite.Offload{CsumStart: rewrite.EthLen + 20, CsumOffset: 16, HdrLen: rewrite.EthLen + 20 + 32, GSOSize: 1400}
		if o.Offload != want {
			t.Fatalf("frame %d asks %+v, want %+v", i, o.Offload, want)
		}
		c := int(o.Offload.CsumStart + o.Offload.CsumOffset)
		binary.BigEndian.PutUint16(o.Frame[c:], ^uint16(rewrite.Checksum(o.Frame[o.Offload.CsumStart:], 0)))
		var q rewrite.Packet
		if r := q.Parse(o.Frame, false, true); r != rewrite.OK {
			t.Fatalf("frame %d, completed like the kernel: %v", i, r)
		}
	}
	// The table's own frames (the ACK the client is owed) ask for
	// nothing: decode verifies their checksums as they are.
	b.feed(false, b.fromServer(primaryIP, b.pISN+1, b.cISN+4201, rewrite.ACK, 500, pTS0+5, cTS0+2), nil)
	b.feed(false, b.fromServer(backupIP, b.bISN+1, b.cISN+4201, rewrite.ACK, 500, bTS0+5, cTS0+2), nil)
}

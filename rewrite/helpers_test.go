package rewrite

import (
	"encoding/binary"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// refChecksum is RFC 1071 as written: 16-bit big-endian words, an odd last
// byte padded with zero, end-around carry after every addition.
func refChecksum(b []byte, initial uint32) uint32 {
	sum := initial
	sum = (sum & 0xffff) + (sum >> 16)
	sum = (sum & 0xffff) + (sum >> 16)
	for i := 0; i < len(b); i += 2 {
		w := uint32(b[i]) << 8
		if i+1 < len(b) {
			w |= uint32(b[i+1])
		}
		sum += w
		if sum > 0xffff {
			sum -= 0xffff
		}
	}
	return sum
}

// refVerify checks a frame's IPv4 and TCP checksums with the reference sum
// and nothing from the package under test.
func refVerify(frame []byte) (ipOK, tcpOK bool) {
	ihl := int(frame[14]&0xf) * 4
	total := int(binary.BigEndian.Uint16(frame[16:]))
	ipOK = refChecksum(frame[14:14+ihl], 0) == 0xffff
	seg := frame[14+ihl : 14+total]
	pseudo := refChecksum(frame[26:34], 6+uint32(len(seg)))
	tcpOK = refChecksum(seg, pseudo) == 0xffff
	return
}

// seg describes a test segment built with gopacket.
type seg struct {
	src, dst     [4]byte
	sport, dport uint16
	seq, ack     uint32
	flags        uint8
	window       uint16
	opts         []layers.TCPOption
	ipOpts       []layers.IPv4Option
	payload      []byte
	id           uint16
	ttl          uint8
}

var (
	clientIP  = [4]byte{198, 51, 100, 7}
	vip       = [4]byte{203, 0, 113, 10}
	primaryIP = [4]byte{10, 0, 0, 2}
	backupIP  = [4]byte{10, 0, 0, 3}
)

func baseSeg() seg {
	return seg{
		src: clientIP, dst: vip, sport: 40000, dport: 80,
		seq: 0xFFFFFFF0, ack: 0x7FFFFFFF, flags: ACK | PSH, window: 502,
		payload: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		id:      0x1234, ttl: 63,
	}
}

func optMSSOpt(v uint16) layers.TCPOption {
	return layers.TCPOption{OptionType: layers.TCPOptionKindMSS, OptionData: binary.BigEndian.AppendUint16(nil, v)}
}
func optWSOpt(v uint8) layers.TCPOption {
	return layers.TCPOption{OptionType: layers.TCPOptionKindWindowScale, OptionData: []byte{v}}
}
func optSACKPermOpt() layers.TCPOption {
	return layers.TCPOption{OptionType: layers.TCPOptionKindSACKPermitted}
}
func optTSOpt(val, ecr uint32) layers.TCPOption {
	d := binary.BigEndian.AppendUint32(nil, val)
	return layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps, OptionData: binary.BigEndian.AppendUint32(d, ecr)}
}
func optSACKOpt(edges ...uint32) layers.TCPOption {
	var d []byte
	for _, e := range edges {
		d = binary.BigEndian.AppendUint32(d, e)
	}
	return layers.TCPOption{OptionType: layers.TCPOptionKindSACK, OptionData: d}
}
func nopOpt() layers.TCPOption { return layers.TCPOption{OptionType: layers.TCPOptionKindNop} }

// frame serialises s with gopacket, lengths and checksums computed by it.
func (s seg) frame(t testing.TB) []byte {
	t.Helper()
	eth := &layers.Ethernet{
		SrcMAC:       net.HardwareAddr{2, 0, 0, 0, 0, 1},
		DstMAC:       net.HardwareAddr{2, 0, 0, 0, 0, 2},
		EthernetType: layers.EthernetTypeIPv4,
	}
	ip := &layers.IPv4{
		Version: 4, TTL: s.ttl, Id: s.id, Flags: layers.IPv4DontFragment,
		Protocol: layers.IPProtocolTCP, SrcIP: net.IP(s.src[:]), DstIP: net.IP(s.dst[:]),
		Options: s.ipOpts,
	}
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(s.sport), DstPort: layers.TCPPort(s.dport),
		Seq: s.seq, Ack: s.ack, Window: s.window,
		FIN: s.flags&FIN != 0, SYN: s.flags&SYN != 0, RST: s.flags&RST != 0,
		PSH: s.flags&PSH != 0, ACK: s.flags&ACK != 0, URG: s.flags&URG != 0,
		ECE: s.flags&ECE != 0, CWR: s.flags&CWR != 0,
		Options: s.opts,
	}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, tcp, gopacket.Payload(s.payload))
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// rawOpts builds s with the TCP options area replaced by raw (padded with
// EOL to a multiple of 4), then fixes the TCP checksum with the reference.
func (s seg) rawOpts(t testing.TB, raw []byte) []byte {
	t.Helper()
	n := (len(raw) + 3) &^ 3
	s.opts = nil
	for range n {
		s.opts = append(s.opts, nopOpt())
	}
	f := s.frame(t)
	ihl := int(f[14]&0xf) * 4
	tcp := 14 + ihl
	o := tcp + 20
	copy(f[o:o+n], make([]byte, n))
	copy(f[o:], raw)
	fixTCP(f)
	return f
}

// fixTCP recomputes the TCP checksum of f with the reference sum.
func fixTCP(f []byte) {
	ihl := int(f[14]&0xf) * 4
	total := int(binary.BigEndian.Uint16(f[16:]))
	tcp := 14 + ihl
	f[tcp+16], f[tcp+17] = 0, 0
	pseudo := refChecksum(f[26:34], 6+uint32(total-ihl))
	binary.BigEndian.PutUint16(f[tcp+16:], ^uint16(refChecksum(f[tcp:14+total], pseudo)))
}

// fixIP recomputes the IPv4 header checksum of f with the reference sum.
func fixIP(f []byte) {
	ihl := int(f[14]&0xf) * 4
	f[24], f[25] = 0, 0
	binary.BigEndian.PutUint16(f[24:], ^uint16(refChecksum(f[14:14+ihl], 0)))
}

// makePartial replaces the TCP checksum of f with the folded pseudo-header
// sum, as Linux leaves it for CHECKSUM_PARTIAL.
func makePartial(f []byte) {
	ihl := int(f[14]&0xf) * 4
	total := int(binary.BigEndian.Uint16(f[16:]))
	tcp := 14 + ihl
	binary.BigEndian.PutUint16(f[tcp+16:], uint16(refChecksum(f[26:34], 6+uint32(total-ihl))))
}

// decoded is a frame re-decoded by gopacket.
type decoded struct {
	ip  *layers.IPv4
	tcp *layers.TCP
}

// decode re-decodes frame with gopacket and fails the test unless both
// checksums are valid by gopacket's own verification and by the reference.
func decode(t testing.TB, frame []byte) decoded {
	t.Helper()
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if el := pkt.ErrorLayer(); el != nil {
		t.Fatalf("gopacket decode: %v", el.Error())
	}
	ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	tcp, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if ip == nil || tcp == nil {
		t.Fatalf("gopacket found no IPv4/TCP in %x", frame)
	}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	if _, r := ip.VerifyChecksum(); !r.Valid {
		t.Errorf("IPv4 checksum %#04x, want %#04x", r.Actual, r.Correct)
	}
	if _, r := tcp.VerifyChecksum(); !r.Valid {
		t.Errorf("TCP checksum %#04x, want %#04x", r.Actual, r.Correct)
	}
	if ipOK, tcpOK := refVerify(frame); !ipOK || !tcpOK {
		t.Errorf("reference checksum check: ip %v tcp %v", ipOK, tcpOK)
	}
	return decoded{ip, tcp}
}

// opt returns the data of the last option of kind k.
func (d decoded) opt(k layers.TCPOptionKind) ([]byte, bool) {
	var data []byte
	ok := false
	for _, o := range d.tcp.Options {
		if o.OptionType == k {
			data, ok = o.OptionData, true
		}
	}
	return data, ok
}

func (d decoded) flags() uint8 {
	var f uint8
	for _, b := range []struct {
		on  bool
		bit uint8
	}{{d.tcp.FIN, FIN}, {d.tcp.SYN, SYN}, {d.tcp.RST, RST}, {d.tcp.PSH, PSH},
		{d.tcp.ACK, ACK}, {d.tcp.URG, URG}, {d.tcp.ECE, ECE}, {d.tcp.CWR, CWR}} {
		if b.on {
			f |= b.bit
		}
	}
	return f
}

func mustParse(t testing.TB, p *Packet, f []byte, partial bool) {
	t.Helper()
	if r := p.Parse(f, partial, !partial); r != OK {
		t.Fatalf("Parse: %v", r)
	}
}

package capture

import (
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/net/bpf"
)

var (
	testMACA = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xa}
	testMACB = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xb}
)

type frameSpec struct {
	src, dst     [4]byte
	sport, dport uint16
	udp          bool
	ipv6         bool
	arp          bool
	fragOffset   uint16
	moreFrags    bool
	ipOptions    int // number of 4-byte option words (IHL = 5 + n)
	payload      int
	fromA        bool // Ethernet from testMACA to testMACB instead of B to A
}

func buildFrame(t testing.TB, s frameSpec) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	eth := &layers.Ethernet{SrcMAC: testMACB, DstMAC: testMACA, EthernetType: layers.EthernetTypeIPv4}
	if s.fromA {
		eth.SrcMAC, eth.DstMAC = testMACA, testMACB
	}
	payload := gopacket.Payload(make([]byte, s.payload))
	var err error
	switch {
	case s.arp:
		eth.EthernetType = layers.EthernetTypeARP
		arp := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
			HwAddressSize: 6, ProtAddressSize: 4, Operation: layers.ARPRequest,
			SourceHwAddress: testMACB, SourceProtAddress: s.src[:],
			DstHwAddress: make([]byte, 6), DstProtAddress: s.dst[:]}
		err = gopacket.SerializeLayers(buf, opts, eth, arp)
	case s.ipv6:
		eth.EthernetType = layers.EthernetTypeIPv6
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP,
			SrcIP: net.ParseIP("fd00::2"), DstIP: net.ParseIP("fd00::1")}
		tcp := &layers.TCP{SrcPort: layers.TCPPort(s.sport), DstPort: layers.TCPPort(s.dport), SYN: true, Window: 1000}
		_ = tcp.SetNetworkLayerForChecksum(ip)
		err = gopacket.SerializeLayers(buf, opts, eth, ip, tcp, payload)
	default:
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP,
			SrcIP: net.IP(s.src[:]), DstIP: net.IP(s.dst[:]), FragOffset: s.fragOffset}
		if s.moreFrags {
			ip.Flags |= layers.IPv4MoreFragments
		}
		for i := 0; i < s.ipOptions; i++ {
			// Four NOPs make one option word.
			for j := 0; j < 4; j++ {
				ip.Options = append(ip.Options, layers.IPv4Option{OptionType: 1, OptionLength: 1})
			}
		}
		var l4 gopacket.SerializableLayer
		if s.udp {
			ip.Protocol = layers.IPProtocolUDP
			udp := &layers.UDP{SrcPort: layers.UDPPort(s.sport), DstPort: layers.UDPPort(s.dport)}
			_ = udp.SetNetworkLayerForChecksum(ip)
			l4 = udp
		} else {
			tcp := &layers.TCP{SrcPort: layers.TCPPort(s.sport), DstPort: layers.TCPPort(s.dport), SYN: true, Seq: 1000, Window: 1000}
			_ = tcp.SetNetworkLayerForChecksum(ip)
			l4 = tcp
		}
		err = gopacket.SerializeLayers(buf, opts, eth, ip, l4, payload)
	}
	if err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// frameMeta is what the kernel knows of a frame beside its bytes, which
// the filter reads through BPF extensions.
type frameMeta struct {
	pktType uint32 // PACKET_HOST, PACKET_OTHERHOST ...
	vlan    bool   // a VLAN tag was stripped before the tap
}

func runFilter(t *testing.T, raw []bpf.RawInstruction, frame []byte) bool {
	t.Helper()
	return runFilterMeta(t, raw, frame, frameMeta{})
}

// runFilterMeta runs the filter in x/net/bpf's VM, which has no
// extensions: each extension load becomes a load of m's value.
func runFilterMeta(t *testing.T, raw []bpf.RawInstruction, frame []byte, m frameMeta) bool {
	t.Helper()
	ins, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatalf("filter does not disassemble")
	}
	for i, in := range ins {
		ext, ok := in.(bpf.LoadExtension)
		if !ok {
			continue
		}
		switch ext.Num {
		case bpf.ExtType:
			ins[i] = bpf.LoadConstant{Dst: bpf.RegA, Val: m.pktType}
		case bpf.ExtVLANTagPresent:
			ins[i] = bpf.LoadConstant{Dst: bpf.RegA, Val: map[bool]uint32{false: 0, true: 1}[m.vlan]}
		default:
			t.Fatalf("filter loads extension %v, which the test does not emulate", ext.Num)
		}
	}
	vm, err := bpf.NewVM(ins)
	if err != nil {
		t.Fatalf("NewVM: %v", err)
	}
	n, err := vm.Run(frame)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return n > 0
}

var (
	vip1    = [4]byte{192, 0, 2, 10}
	vip2    = [4]byte{192, 0, 2, 11}
	client  = [4]byte{198, 51, 100, 7}
	server1 = [4]byte{10, 1, 0, 2}
	server2 = [4]byte{10, 1, 0, 3}
	gwAddr  = [4]byte{10, 1, 0, 1}
)

func TestClientFilter(t *testing.T) {
	raw, err := ClientFilter([][4]byte{vip1, vip2}, []uint16{80, 443})
	if err != nil {
		t.Fatal(err)
	}
	ok := frameSpec{src: client, dst: vip1, sport: 40000, dport: 80}
	cases := []struct {
		name   string
		mod    func(*frameSpec)
		accept bool
	}{
		{"vip1 port 80", func(*frameSpec) {}, true},
		{"vip2 port 443", func(s *frameSpec) { s.dst, s.dport = vip2, 443 }, true},
		{"with payload", func(s *frameSpec) { s.payload = 1400 }, true},
		{"IP options IHL 6", func(s *frameSpec) { s.ipOptions = 1 }, true},
		{"IP options IHL 6 wrong port", func(s *frameSpec) { s.ipOptions = 1; s.dport = 81 }, false},
		{"first fragment", func(s *frameSpec) { s.moreFrags = true }, true},
		{"wrong port", func(s *frameSpec) { s.dport = 81 }, false},
		{"port as source only", func(s *frameSpec) { s.sport, s.dport = 80, 40000 }, false},
		{"wrong IP", func(s *frameSpec) { s.dst = server1 }, false},
		{"VIP as source only", func(s *frameSpec) { s.src, s.dst = vip1, client }, false},
		{"UDP", func(s *frameSpec) { s.udp = true }, false},
		{"IPv6", func(s *frameSpec) { s.ipv6 = true }, false},
		{"ARP", func(s *frameSpec) { s.arp = true }, false},
		{"non-first fragment", func(s *frameSpec) { s.fragOffset = 185 }, false},
		{"last fragment", func(s *frameSpec) { s.fragOffset = 1 }, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := ok
			c.mod(&s)
			if got := runFilter(t, raw, buildFrame(t, s)); got != c.accept {
				t.Errorf("accept = %v, want %v", got, c.accept)
			}
		})
	}
	t.Run("truncated", func(t *testing.T) {
		f := buildFrame(t, ok)
		if runFilter(t, raw, f[:14+20+2]) {
			t.Error("accepted a frame without a TCP dst port")
		}
	})
}

func TestServerFilter(t *testing.T) {
	raw, err := ServerFilter([][4]byte{server1, server2}, []uint16{80, 8080}, [][4]byte{gwAddr})
	if err != nil {
		t.Fatal(err)
	}
	ok := frameSpec{src: server1, dst: client, sport: 80, dport: 40000}
	cases := []struct {
		name   string
		mod    func(*frameSpec)
		accept bool
	}{
		{"server1 port 80", func(*frameSpec) {}, true},
		{"server2 port 8080", func(s *frameSpec) { s.src, s.sport = server2, 8080 }, true},
		{"IP options IHL 6", func(s *frameSpec) { s.ipOptions = 1 }, true},
		{"IP options IHL 7 wrong port", func(s *frameSpec) { s.ipOptions = 2; s.sport = 81 }, false},
		{"to excluded gateway address", func(s *frameSpec) { s.dst = gwAddr }, false},
		{"wrong port", func(s *frameSpec) { s.sport = 81 }, false},
		{"port as destination only", func(s *frameSpec) { s.sport, s.dport = 40000, 80 }, false},
		{"wrong IP", func(s *frameSpec) { s.src = client }, false},
		{"UDP", func(s *frameSpec) { s.udp = true }, false},
		{"IPv6", func(s *frameSpec) { s.ipv6 = true }, false},
		{"ARP", func(s *frameSpec) { s.arp = true }, false},
		{"non-first fragment", func(s *frameSpec) { s.fragOffset = 185 }, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := ok
			c.mod(&s)
			if got := runFilter(t, raw, buildFrame(t, s)); got != c.accept {
				t.Errorf("accept = %v, want %v", got, c.accept)
			}
		})
	}
	t.Run("no exclude", func(t *testing.T) {
		raw, err := ServerFilter([][4]byte{server1}, []uint16{80}, nil)
		if err != nil {
			t.Fatal(err)
		}
		s := ok
		s.dst = gwAddr
		if !runFilter(t, raw, buildFrame(t, s)) {
			t.Error("rejected a server frame with no exclusions")
		}
	})
}

// TestFilterFrameMeta: both filters take only frames addressed to this
// host's MAC that carried no VLAN tag, whatever their bytes.
func TestFilterFrameMeta(t *testing.T) {
	cf, err := ClientFilter([][4]byte{vip1}, []uint16{80})
	if err != nil {
		t.Fatal(err)
	}
	sf, err := ServerFilter([][4]byte{server1}, []uint16{80}, [][4]byte{gwAddr})
	if err != nil {
		t.Fatal(err)
	}
	filters := []struct {
		name  string
		raw   []bpf.RawInstruction
		frame frameSpec
	}{
		{"client", cf, frameSpec{src: client, dst: vip1, sport: 40000, dport: 80}},
		{"server", sf, frameSpec{src: server1, dst: client, sport: 80, dport: 40000}},
	}
	cases := []struct {
		name   string
		meta   frameMeta
		accept bool
	}{
		{"to this host", frameMeta{pktType: 0}, true},
		{"broadcast", frameMeta{pktType: 1}, false},
		{"multicast", frameMeta{pktType: 2}, false},
		{"to another host (promiscuous)", frameMeta{pktType: 3}, false},
		{"outgoing", frameMeta{pktType: 4}, false},
		{"VLAN-tagged", frameMeta{vlan: true}, false},
	}
	for _, f := range filters {
		for _, c := range cases {
			t.Run(f.name+"/"+c.name, func(t *testing.T) {
				if got := runFilterMeta(t, f.raw, buildFrame(t, f.frame), c.meta); got != c.accept {
					t.Errorf("accept = %v, want %v", got, c.accept)
				}
			})
		}
	}
}

func TestFilterLargeSets(t *testing.T) {
	// More values than an 8-bit conditional jump could skip over.
	var vips [][4]byte
	for i := 0; i < 300; i++ {
		vips = append(vips, [4]byte{10, 9, byte(i >> 8), byte(i)})
	}
	var ports []uint16
	for p := uint16(1000); p < 1300; p++ {
		ports = append(ports, p)
	}
	raw, err := ClientFilter(vips, ports)
	if err != nil {
		t.Fatal(err)
	}
	if !runFilter(t, raw, buildFrame(t, frameSpec{src: client, dst: vips[299], sport: 5, dport: 1299})) {
		t.Error("last VIP/port rejected")
	}
	if !runFilter(t, raw, buildFrame(t, frameSpec{src: client, dst: vips[0], sport: 5, dport: 1000})) {
		t.Error("first VIP/port rejected")
	}
	if runFilter(t, raw, buildFrame(t, frameSpec{src: client, dst: vips[0], sport: 5, dport: 1300})) {
		t.Error("port outside the set accepted")
	}
}

func TestFilterErrors(t *testing.T) {
	if _, err := ClientFilter(nil, []uint16{80}); err == nil {
		t.Error("ClientFilter with no VIPs succeeded")
	}
	if _, err := ServerFilter([][4]byte{server1}, nil, nil); err == nil {
		t.Error("ServerFilter with no ports succeeded")
	}
	var vips [][4]byte
	for i := 0; i < 3000; i++ {
		vips = append(vips, [4]byte{10, 9, byte(i >> 8), byte(i)})
	}
	if _, err := ClientFilter(vips, []uint16{80}); err == nil {
		t.Error("filter longer than BPF_MAXINSNS accepted")
	}
}

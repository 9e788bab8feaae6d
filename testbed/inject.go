package testbed

import (
	be "encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The bad-input generator: frames crafted with gopacket and sent whole,
// Ethernet header included, through an AF_PACKET socket opened inside a
// namespace, so they leave that namespace's interface exactly as built —
// malformed ones too, which no socket API would let through.

// inNS runs fn with its OS thread in namespace ns. Sockets fn opens stay in
// ns for their whole life, whichever thread uses them later. It runs on a
// goroutine of its own: should switching back fail, that goroutine's thread
// is left locked and dies with it instead of serving others in ns.
func inNS(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get own netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns %s: %w", ns, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave netns %s: %w", ns, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// MAC is the hardware address of iface in namespace ns.
func (b *Bed) MAC(ns, iface string) net.HardwareAddr {
	b.t.Helper()
	var mac net.HardwareAddr
	err := inNS(ns, func() error {
		ifi, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		mac = ifi.HardwareAddr
		return nil
	})
	if err != nil {
		b.t.Fatalf("MAC of %s in %s: %v", iface, ns, err)
	}
	return mac
}

// Injector sends hand-made Ethernet frames out of one interface of a
// namespace. Send may be called from any goroutine, one at a time.
type Injector struct {
	conn *packet.Conn
	to   *packet.Addr
	// Src and Dst are the Ethernet addresses Segment.Frame uses when the
	// segment names none: the interface's own and its peer's.
	Src, Dst net.HardwareAddr
	Sent     int // frames the kernel took
}

// Injector opens a generator on iface in namespace ns whose frames go to the
// Ethernet address dst. It is closed in t.Cleanup.
func (b *Bed) Injector(ns, iface string, dst net.HardwareAddr) *Injector {
	b.t.Helper()
	in := &Injector{Dst: dst, to: &packet.Addr{HardwareAddr: dst}}
	err := inNS(ns, func() error {
		ifi, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		in.Src = ifi.HardwareAddr
		// Protocol 0: the socket only sends, it is handed nothing.
		in.conn, err = packet.Listen(ifi, packet.Raw, 0, nil)
		return err
	})
	if err != nil {
		b.t.Fatalf("injector on %s in %s: %v", iface, ns, err)
	}
	b.t.Cleanup(func() { in.conn.Close() })
	return in
}

// ClientInjector is a generator in the client namespace aimed at the
// gateway's client-side interface.
func (b *Bed) ClientInjector() *Injector {
	b.t.Helper()
	return b.Injector(b.Client(), "eth0", b.MAC(b.Gateway(), ClientIface))
}

// Send transmits one frame as it is.
func (in *Injector) Send(frame []byte) error {
	if _, err := in.conn.WriteTo(frame, in.to); err != nil {
		return fmt.Errorf("inject %d-byte frame: %w", len(frame), err)
	}
	in.Sent++
	return nil
}

// Segment describes one IPv4/TCP frame for the generator.
type Segment struct {
	SrcMAC, DstMAC net.HardwareAddr // nil: the injector's
	Src, Dst       netip.AddrPort
	Seq, Ack       uint32
	SYN, ACK, FIN  bool
	RST, PSH       bool
	Window         uint16
	Options        []layers.TCPOption
	IPOptions      []layers.IPv4Option
	// MoreFragments and FragOffset (in 8-byte units) make it a fragment.
	MoreFragments bool
	FragOffset    uint16
	Payload       []byte
}

// Frame serialises s with correct lengths and checksums; the bad-input
// catalogue breaks what it means to break afterwards, in the bytes.
func (in *Injector) Frame(s Segment) []byte {
	eth := &layers.Ethernet{SrcMAC: s.SrcMAC, DstMAC: s.DstMAC, EthernetType: layers.EthernetTypeIPv4}
	if eth.SrcMAC == nil {
		eth.SrcMAC = in.Src
	}
	if eth.DstMAC == nil {
		eth.DstMAC = in.Dst
	}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, Id: uint16(rand.Uint32()),
		SrcIP: s.Src.Addr().AsSlice(), DstIP: s.Dst.Addr().AsSlice(), Options: s.IPOptions,
		FragOffset: s.FragOffset}
	if s.MoreFragments {
		ip.Flags = layers.IPv4MoreFragments
	}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(s.Src.Port()), DstPort: layers.TCPPort(s.Dst.Port()),
		Seq: s.Seq, Ack: s.Ack, SYN: s.SYN, ACK: s.ACK, FIN: s.FIN, RST: s.RST, PSH: s.PSH,
		Window: s.Window, Options: s.Options}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		panic(err) // ip is an *layers.IPv4: cannot fail
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, eth, ip, tcp, gopacket.Payload(s.Payload)); err != nil {
		panic(fmt.Sprintf("serialise %+v: %v", s, err)) // only lengths beyond 64 KiB fail
	}
	return append([]byte(nil), buf.Bytes()...)
}

// Offsets into a frame the generator builds: Ethernet, then IPv4.
const (
	frameIP       = 14
	frameIPCsum   = frameIP + 10
	frameIPLength = frameIP + 2
)

func frameTCP(f []byte) int { return frameIP + int(f[frameIP]&0x0f)*4 }

// BadInput is one crafted frame and the drop reason the gateway's status
// must count it under ("" when the frame is valid and the gateway may take
// it: IP options, a zero-window probe).
type BadInput struct {
	Name  string
	Frame []byte
	Drop  string
}

// BadFrames is the catalogue of malformed frames the gateway must reject
// while parsing, each aimed at the VIP's port from src (a port of no
// connection): truncated frames, impossible header lengths, fragments, bad
// checksums and malformed TCP options.
func (in *Injector) BadFrames(src, vip netip.AddrPort) []BadInput {
	base := Segment{Src: src, Dst: vip, Seq: rand.Uint32(), ACK: true, Ack: rand.Uint32(), Window: 512,
		Payload: []byte("hostile")}
	good := func() []byte { return in.Frame(base) }
	with := func(s Segment) []byte { return in.Frame(s) }
	var out []BadInput
	add := func(name, drop string, f []byte) { out = append(out, BadInput{name, f, drop}) }

	// Truncated: the TCP header cut short; then an IPv4 length beyond the frame.
	add("truncated TCP header", "parse_short", good()[:frameIP+20+10])
	f := good()
	be.BigEndian.PutUint16(f[frameIPLength:], 1400)
	add("IPv4 length beyond the frame", "parse_bad_length", f)
	// IHL 2 (8 bytes). The checksum field takes the VIP's port, where a
	// BPF filter trusting IHL looks for the TCP port, so it reaches parsing.
	f = good()
	f[frameIP] = 0x42
	be.BigEndian.PutUint16(f[frameIPCsum:], vip.Port())
	add("IHL below 5", "parse_bad_ihl", f)
	// TCP data offsets: below the minimum, and beyond the segment.
	f = good()
	f[frameTCP(f)+12] = 3 << 4
	add("TCP data offset 3", "parse_bad_data_offset", f)
	f = in.Frame(Segment{Src: src, Dst: vip, Seq: 1, ACK: true, Window: 512})
	f[frameTCP(f)+12] = 15 << 4
	add("TCP data offset beyond the segment", "parse_bad_data_offset", f)
	// A first fragment: the gateway does not reassemble.
	s := base
	s.MoreFragments = true
	add("first fragment", "parse_fragment", with(s))
	// Checksums: IPv4 header, then TCP.
	f = good()
	f[frameIPCsum] ^= 0x5a
	add("bad IPv4 checksum", "parse_bad_checksum", f)
	f = good()
	f[frameTCP(f)+16] ^= 0x5a
	add("bad TCP checksum", "parse_bad_checksum", f)
	// TCP options whose lengths are impossible: an MSS of length 1, and
	// a length running past the header.
	s = base
	s.Options = []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop}}
	f = with(s)
	o := frameTCP(f) + 20
	f[o], f[o+1] = byte(layers.TCPOptionKindMSS), 1
	fixTCPChecksum(f)
	add("TCP option length 1", "parse_bad_option", f)
	f = with(s)
	f[o], f[o+1] = byte(layers.TCPOptionKindTimestamps), 40
	fixTCPChecksum(f)
	add("TCP option past the header", "parse_bad_option", f)
	return out
}

// fixTCPChecksum recomputes the TCP checksum of a frame the catalogue
// edited, so that the edit is the only thing wrong with it.
func fixTCPChecksum(f []byte) {
	ihl := int(f[frameIP]&0x0f) * 4
	total := int(be.BigEndian.Uint16(f[frameIPLength:]))
	seg := f[frameIP+ihl : frameIP+total]
	seg[16], seg[17] = 0, 0
	sum := uint32(0)
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(f[frameIP+12 : frameIP+20])
	sum += 6 + uint32(len(seg))
	add(seg)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	be.BigEndian.PutUint16(seg[16:], ^uint16(sum))
}

// BadSegments is the catalogue of well-formed segments no client sends, from
// src (a port of no connection) to the VIP: SYN+FIN, a SYN with data, and a
// segment with IP options, which parses and is judged like any other (here:
// no connection, so no_flow).
func (in *Injector) BadSegments(src, vip netip.AddrPort) []BadInput {
	return []BadInput{
		{"SYN+FIN", in.Frame(Segment{Src: src, Dst: vip, Seq: rand.Uint32(), SYN: true, FIN: true, Window: 512}), "bad_flags"},
		{"SYN with data", in.Frame(Segment{Src: src, Dst: vip, Seq: rand.Uint32(), SYN: true, Window: 512,
			Payload: []byte("GET / HTTP/1.1\r\n\r\n")}), "syn_data"},
		{"IP options (record route) on an ACK", in.Frame(Segment{Src: src, Dst: vip, Seq: rand.Uint32(), ACK: true,
			Ack: rand.Uint32(), Window: 512, IPOptions: []layers.IPv4Option{
				{OptionType: 7, OptionLength: 11, OptionData: []byte{4, 0, 0, 0, 0, 0, 0, 0, 0}},
				{OptionType: 0, OptionLength: 1}}}), "no_flow"},
	}
}

// Blind builds the segments a blind attacker aims at a live connection whose
// client sent seq and ack (observed, as an attacker cannot, so that the
// numbers are certainly off the window): a reset and a SYN with numbers half
// the sequence space away, data half the space away, an ack of bytes never
// sent, and a zero-window probe, which a real client sends and the gateway
// forwards.
func (in *Injector) Blind(client, vip netip.AddrPort, seq, ack uint32, win uint16) []BadInput {
	far := seq + 1<<31
	return []BadInput{
		{"blind RST off the window", in.Frame(Segment{Src: client, Dst: vip, Seq: far, RST: true}), "off_window_rst"},
		{"blind SYN with another ISN", in.Frame(Segment{Src: client, Dst: vip, Seq: far, SYN: true, Window: 512}), "stale_syn"},
		{"data off the window", in.Frame(Segment{Src: client, Dst: vip, Seq: far, Ack: ack, ACK: true, PSH: true,
			Window: win, Payload: []byte("injected")}), "out_of_window"},
		{"ack of bytes never sent", in.Frame(Segment{Src: client, Dst: vip, Seq: seq, Ack: ack + 1<<30, ACK: true,
			Window: win}), "ack_unsent"},
		{"zero-window probe", in.Frame(Segment{Src: client, Dst: vip, Seq: seq - 1, Ack: ack, ACK: true, Window: win}), ""},
	}
}

// SynFlood sends n SYNs to vip as fast as the socket takes them, from
// random addresses of prefix (never its network, broadcast or avoid
// addresses) and random ports and ISNs. It returns how many the kernel took
// and how long that took.
func (in *Injector) SynFlood(n int, prefix netip.Prefix, vip netip.AddrPort, avoid ...netip.Addr) (int, time.Duration, error) {
	base := prefix.Masked().Addr().As4()
	hostBits := 32 - prefix.Bits()
	skip := map[netip.Addr]bool{}
	for _, a := range avoid {
		skip[a] = true
	}
	// One template, patched per SYN: address, port, ISN and both checksums.
	tmpl := in.Frame(Segment{Src: netip.AddrPortFrom(prefix.Addr(), 1), Dst: vip, SYN: true, Window: 64240,
		Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}}}})
	f := make([]byte, len(tmpl))
	start := time.Now()
	sent := 0
	for i := 0; i < n; i++ {
		var a [4]byte
		for {
			host := rand.Uint32N(1<<hostBits-2) + 1
			v := be.BigEndian.Uint32(base[:]) | host
			be.BigEndian.PutUint32(a[:], v)
			if !skip[netip.AddrFrom4(a)] {
				break
			}
		}
		copy(f, tmpl)
		copy(f[frameIP+12:frameIP+16], a[:])
		be.BigEndian.PutUint16(f[frameIP+4:], uint16(i))
		f[frameIPCsum], f[frameIPCsum+1] = 0, 0
		be.BigEndian.PutUint16(f[frameIPCsum:], ipChecksum(f[frameIP:frameIP+20]))
		t := frameTCP(f)
		be.BigEndian.PutUint16(f[t:], uint16(1024+rand.UintN(64511)))
		be.BigEndian.PutUint32(f[t+4:], rand.Uint32())
		fixTCPChecksum(f)
		if err := in.Send(f); err != nil {
			return sent, time.Since(start), err
		}
		sent++
	}
	return sent, time.Since(start), nil
}

func ipChecksum(h []byte) uint16 {
	sum := uint32(0)
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// Observe watches iface in namespace ns, both directions, for up to timeout
// and returns the first IPv4/TCP frame match accepts: how a test learns a
// live connection's numbers to aim blind segments certainly off them.
func (b *Bed) Observe(ns, iface string, timeout time.Duration, match func(*layers.IPv4, *layers.TCP) bool) (*layers.IPv4, *layers.TCP, error) {
	var conn *packet.Conn
	err := inNS(ns, func() error {
		ifi, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		// ETH_P_ALL: only such sockets are shown what the interface sends.
		conn, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, nil)
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("observe %s in %s: %w", iface, ns, err)
	}
	defer conn.Close()
	deadline := time.Now().Add(timeout)
	if err := conn.SetReadDeadline(deadline); err != nil {
		return nil, nil, err
	}
	buf := make([]byte, 65536)
	for {
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			return nil, nil, fmt.Errorf("observe %s in %s: no matching frame in %v: %w", iface, ns, timeout, err)
		}
		pk := gopacket.NewPacket(buf[:n], layers.LayerTypeEthernet, gopacket.Default)
		ip, _ := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		tcp, _ := pk.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if ip != nil && tcp != nil && match(ip, tcp) {
			return ip, tcp, nil
		}
	}
}

// Package capture owns the gateway's contact with the host: AF_PACKET receive
// rings with in-kernel BPF filters, raw transmit, the kernel-bypass nftables
// table, offload checks, and next-hop MAC resolution through netlink.
//
// IMPLEMENTATION CONTRACT (signatures are fixed; implement in OS-split files
// x_linux.go with a x_other.go that returns ErrUnsupported):
//
//	// Frame is one received frame, valid until the next Ring.Next or Release.
//	type Frame struct {
//		Data        []byte // captured bytes, Ethernet header first
//		WireLen     int    // length on the wire; > len(Data) means truncated (oversized)
//		CsumPartial bool   // TP_STATUS_CSUMNOTREADY: TCP checksum not filled in
//	}
//
//	// RingConfig sizes a TPACKET_V2 receive ring.
//	type RingConfig struct {
//		FrameSize  int // bytes per ring frame; must fit tpacket2_hdr + MTU + Ethernet; default for MTU 1500: 2048
//		FrameCount int // default 4096
//	}
//
//	// OpenRing opens an ETH_P_ALL AF_PACKET socket on ifname, attaches filter
//	// BEFORE bind, sets PACKET_IGNORE_OUTGOING, PACKET_VERSION=TPACKET_V2, an
//	// RX ring of cfg size, mmaps it, and binds to the interface. Non-blocking.
//	func OpenRing(ifname string, filter []bpf.RawInstruction, cfg RingConfig) (*Ring, error)
//	func (r *Ring) Next() (Frame, bool)  // next frame owned by user space, false if none; does not block
//	func (r *Ring) Release()             // hand the frame returned by Next back to the kernel
//	func (r *Ring) Fd() int
//	func (r *Ring) Stats() (packets, drops uint64, err error) // PACKET_STATISTICS (kernel ring drops)
//	func (r *Ring) Close() error
//	// Wait blocks until one of rings has a frame ready or timeout passes (poll(2)); zero allocs.
//	func Wait(rings []*Ring, timeout time.Duration) error
//
//	// Sender transmits whole Ethernet frames on one interface (AF_PACKET
//	// SOCK_RAW, protocol 0 so it receives nothing, bound to the interface;
//	// send with write(2): zero allocations).
//	func OpenSender(ifname string) (*Sender, error)
//	func (s *Sender) Send(frame []byte) error
//	func (s *Sender) MAC() [6]byte  // interface hardware address
//	func (s *Sender) MTU() int
//	func (s *Sender) Close() error
//
//	// Filters (golang.org/x/net/bpf assembled):
//	// ClientFilter accepts IPv4 TCP frames with dst in vips and dst port in ports
//	// (the handled client traffic). ServerFilter accepts IPv4 TCP frames with src
//	// in servers, src port in ports, and dst NOT equal to any of exclude (the
//	// gateway's own addresses, so its own probes to the servers are not captured).
//	func ClientFilter(vips [][4]byte, ports []uint16) ([]bpf.RawInstruction, error)
//	func ServerFilter(servers [][4]byte, ports []uint16, exclude [][4]byte) ([]bpf.RawInstruction, error)
//
//	// Bypass is the nftables state the gateway owns (github.com/google/nftables):
//	// table "understudy" family netdev with one ingress chain per interface
//	// dropping exactly what ClientFilter/ServerFilter match (with counters), and a
//	// table "understudy_watch" family inet with a forward chain counting (never
//	// dropping) any handled packet the kernel tries to forward — must stay zero.
//	type BypassConfig struct {
//		ClientIface, ServerIface string
//		VIPs, Servers, Exclude [][4]byte
//		Ports []uint16
//	}
//	// InstallBypass deletes stale tables of the same names first, then creates them.
//	func InstallBypass(cfg BypassConfig) (*Bypass, error)
//	func (b *Bypass) Counters() (BypassCounters, error) // dropped client pkts, dropped server pkts, kernel-forwarded handled pkts
//	func (b *Bypass) Remove() error
//	type BypassCounters struct{ ClientDropped, ServerDropped, KernelForwarded uint64 }
//
//	// Offloads: check and disable GRO, LRO, TSO, GSO, tx/rx checksum offload
//	// (ethtool ioctl) on an interface; returns the names of the features it
//	// turned off; error if a feature is on and cannot be turned off.
//	func DisableOffloads(ifname string) (changed []string, err error)
//
//	// Neighbors resolves the next-hop MAC for an IPv4 destination leaving ifname:
//	// route lookup (netlink RouteGet) then neighbour table; kept in a cache that
//	// a netlink neighbour subscription keeps fresh. Lookup is the hot path: zero
//	// allocations, no syscalls. On a miss it asks a background goroutine to resolve
//	// (RouteGet + neighbour entry; if absent, trigger kernel ARP resolution with
//	// an NTF_USE neighbour request, never flooding) and returns false.
//	func NewNeighbors(ctx context.Context, ifname string) (*Neighbors, error)
//	func (n *Neighbors) Lookup(ip [4]byte) ([6]byte, bool)
//	func (n *Neighbors) Resolve(ctx context.Context, ip [4]byte, timeout time.Duration) ([6]byte, error) // blocking, for start-up
//	func (n *Neighbors) Close()
package capture

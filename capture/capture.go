package capture

import (
	"errors"
	"fmt"
	"runtime"
)

// ErrUnsupported is returned by every constructor on systems other than Linux.
var ErrUnsupported = fmt.Errorf("capture: %w on %s", errors.ErrUnsupported, runtime.GOOS)

// Frame is one received frame, valid until the next Ring.Next or Release.
type Frame struct {
	Data        []byte // captured bytes, Ethernet header first
	WireLen     int    // length on the wire; > len(Data) means truncated (oversized)
	CsumPartial bool   // TP_STATUS_CSUMNOTREADY: TCP checksum not filled in
	GSOSize     uint16 // a super-frame's segment size (RingConfig.VnetHdr only); 0 for a plain frame
}

// Truncated reports whether the frame was larger than its ring slot.
func (f Frame) Truncated() bool { return f.WireLen > len(f.Data) }

// RingConfig sizes a TPACKET_V2 receive ring. The zero value means the
// defaults.
type RingConfig struct {
	FrameSize  int // bytes per ring frame; must fit tpacket2_hdr + MTU + Ethernet; default for MTU 1500: 2048
	FrameCount int // default 4096
	// VnetHdr has the kernel hand coalesced (GRO) and unsegmented (TSO)
	// super-frames up whole, each with its segment size (PACKET_VNET_HDR).
	// FrameSize must then hold the largest: FrameSizeFor(MaxSuperFrame).
	VnetHdr bool
}

const (
	// DefaultFrameSize holds a 1514-byte Ethernet frame after the 66-byte
	// TPACKET_V2 header area.
	DefaultFrameSize = 2048
	// DefaultFrameCount is the default number of ring slots.
	DefaultFrameCount = 4096
	// ringHeaderRoom is where the Ethernet header starts inside a ring slot:
	// TPACKET_ALIGN(TPACKET2_HDRLEN + 16) - ETH_HLEN (kernel tpacket_rcv).
	ringHeaderRoom = 66
	// vnetHdrLen is the size of struct virtio_net_hdr, which comes before
	// each frame's Ethernet header in a ring, and in a send, with VnetHdr.
	vnetHdrLen = 10
	// MaxSuperFrame is the largest IPv4 packet a super-frame can be.
	MaxSuperFrame = 65535
)

// FrameSizeFor returns the smallest ring frame size that holds a whole
// Ethernet frame (with one VLAN tag) for the given MTU, and its
// virtio_net_hdr.
func FrameSizeFor(mtu int) int {
	n := ringHeaderRoom + vnetHdrLen + 14 + 4 + mtu
	return (n + 15) &^ 15
}

func (c RingConfig) withDefaults() RingConfig {
	if c.FrameSize == 0 {
		c.FrameSize = DefaultFrameSize
	}
	if c.FrameCount == 0 {
		c.FrameCount = DefaultFrameCount
	}
	return c
}

// BypassConfig names the interfaces and the handled traffic the bypass tables
// match. An empty interface name means no ingress chain for that side.
type BypassConfig struct {
	ClientIface, ServerIface string
	VIPs, Servers, Exclude   [][4]byte
	Ports                    []uint16
}

// BypassCounters are the packet counters of the bypass tables.
type BypassCounters struct {
	ClientDropped   uint64 // client packets dropped at client-interface ingress
	ServerDropped   uint64 // server packets dropped at server-interface ingress
	KernelForwarded uint64 // handled packets the host kernel tried to forward; must stay zero
	SpoofedVIP      uint64 // frames from the servers' LAN with a VIP for source, dropped
}

// The nftables tables the gateway owns; named on every system, so that
// messages about them can be.
const (
	BypassTable = "understudy"       // family netdev
	WatchTable  = "understudy_watch" // family inet
)

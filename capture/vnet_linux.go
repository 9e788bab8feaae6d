package capture

import (
	"encoding/binary"

	"understudy/rewrite"
)

// struct virtio_net_hdr (linux/virtio_net.h), in the host's byte order as
// packet sockets use it: flags, gso_type, hdr_len, gso_size, csum_start,
// csum_offset.
const (
	vnetFlags      = 0
	vnetGSOType    = 1
	vnetHdrLenOff  = 2
	vnetGSOSizeOff = 4
	vnetCsumStart  = 6
	vnetCsumOff    = 8

	vnetNeedsCsum = 1    // VIRTIO_NET_HDR_F_NEEDS_CSUM
	vnetGSOTCPv4  = 1    // VIRTIO_NET_HDR_GSO_TCPV4
	vnetGSOECN    = 0x80 // VIRTIO_NET_HDR_GSO_ECN: the first segment carries CWR

	tcpCsumField = 16 // the checksum's offset in the TCP header
	tcpFlagsByte = 13
	tcpCWR       = 0x80
)

// vnetGSOSize returns the segment size of a received IPv4/TCP super-frame,
// 0 for a plain frame or another kind of super-frame (the datapath carries
// IPv4/TCP only, and rejects the rest on parsing).
func vnetGSOSize(h []byte) uint16 {
	if h[vnetGSOType]&^vnetGSOECN != vnetGSOTCPv4 {
		return 0
	}
	return binary.NativeEndian.Uint16(h[vnetGSOSizeOff:])
}

// putVnetHdr writes the virtio_net_hdr that asks the kernel for o on
// sending frame: complete the TCP checksum from o.CsumStart, and cut a
// super-frame into o.GSOSize segments. The zero Offload asks nothing.
func putVnetHdr(h, frame []byte, o rewrite.Offload) {
	clear(h[:vnetHdrLen])
	if o.CsumStart == 0 {
		return
	}
	h[vnetFlags] = vnetNeedsCsum
	binary.NativeEndian.PutUint16(h[vnetCsumStart:], o.CsumStart)
	binary.NativeEndian.PutUint16(h[vnetCsumOff:], tcpCsumField)
	if o.GSOSize == 0 {
		return
	}
	h[vnetGSOType] = vnetGSOTCPv4
	// The kernel marks a super-frame whose first segment carries CWR so
	// that only that segment keeps it.
	if int(o.CsumStart)+tcpFlagsByte < len(frame) && frame[int(o.CsumStart)+tcpFlagsByte]&tcpCWR != 0 {
		h[vnetGSOType] |= vnetGSOECN
	}
	binary.NativeEndian.PutUint16(h[vnetHdrLenOff:], o.HdrLen)
	binary.NativeEndian.PutUint16(h[vnetGSOSizeOff:], o.GSOSize)
}

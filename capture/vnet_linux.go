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

// putVnetHdr writes the virtio_net_hdr that asks the kernel for o:
// complete the TCP checksum from o.CsumStart, and cut a super-frame into
// o.GSOSize segments. The zero Offload asks nothing.
func putVnetHdr(h []byte, o rewrite.Offload) {
	clear(h[:vnetHdrLen])
	if o.CsumStart == 0 {
		return
	}
	h[vnetFlags] = vnetNeedsCsum
	binary.NativeEndian.PutUint16(h[vnetCsumStart:], o.CsumStart)
	binary.NativeEndian.PutUint16(h[vnetCsumOff:], o.CsumOffset)
	if o.GSOSize == 0 {
		return
	}
	h[vnetGSOType] = vnetGSOTCPv4
	if o.ECN {
		h[vnetGSOType] |= vnetGSOECN
	}
	binary.NativeEndian.PutUint16(h[vnetHdrLenOff:], o.HdrLen)
	binary.NativeEndian.PutUint16(h[vnetGSOSizeOff:], o.GSOSize)
}

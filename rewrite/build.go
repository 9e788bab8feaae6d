package rewrite

import "encoding/binary"

// Spec describes a segment the gateway synthesises (SYN-ACK, pure ACK, FIN,
// RST). Options are emitted in Linux's order: MSS, SACK-permitted,
// timestamps, window scale (with NOP padding to a multiple of 4).
type Spec struct {
	SrcMAC, DstMAC   [6]byte // may be zero: the sender fills them
	Src, Dst         [4]byte
	SrcPort, DstPort uint16
	Seq, Ack         Seq
	Flags            uint8
	Window           uint16
	MSS              uint16 // 0: no MSS option
	WScale           int8   // <0: no window-scale option
	SACKPermitted    bool
	HasTS            bool
	TSval, TSecr     uint32
	TTL              uint8  // 0 means 64
	Payload          []byte // copied after the headers (replayed data)
	// SACK blocks, as many as the option space left holds (three beside
	// timestamps, four without); the rest are left out.
	SACK [][2]Seq
}

// BuildMin is the buffer size Build needs: the largest headers it may write.
const BuildMin = EthLen + 20 + 60

// Build writes the frame described by s into buf (Ethernet header with
// EtherType IPv4, IPv4 header with DF set, TCP header and options) with full
// checksums, parses it into p and returns the frame length. buf must hold at
// least 14+20+60 bytes plus the payload; if it does not, Build returns 0 and
// leaves p alone.
func Build(buf []byte, s *Spec, p *Packet) int {
	if len(buf) < BuildMin+len(s.Payload) {
		return 0
	}
	const tcp = ipOff + ipMinLen
	// Options as Linux's tcp_options_write lays them out, each group a
	// whole number of 32-bit words.
	o := tcp + tcpMinLen
	if s.MSS != 0 {
		buf[o], buf[o+1] = optMSS, optMSSLen
		binary.BigEndian.PutUint16(buf[o+2:], s.MSS)
		o += 4
	}
	switch {
	case s.HasTS:
		if s.SACKPermitted {
			buf[o], buf[o+1] = optSACKPerm, optSACKPermLen
		} else {
			buf[o], buf[o+1] = optNOP, optNOP
		}
		buf[o+2], buf[o+3] = optTS, optTSLen
		binary.BigEndian.PutUint32(buf[o+4:], s.TSval)
		binary.BigEndian.PutUint32(buf[o+8:], s.TSecr)
		o += 12
	case s.SACKPermitted:
		buf[o], buf[o+1], buf[o+2], buf[o+3] = optNOP, optNOP, optSACKPerm, optSACKPermLen
		o += 4
	}
	if s.WScale >= 0 {
		buf[o], buf[o+1], buf[o+2], buf[o+3] = optNOP, optWS, optWSLen, byte(s.WScale)
		o += 4
	}
	if n := min(len(s.SACK), (tcp+tcpMaxLen-o-4)/8); n > 0 {
		buf[o], buf[o+1], buf[o+2], buf[o+3] = optNOP, optNOP, optSACK, byte(2+8*n)
		o += 4
		for _, b := range s.SACK[:n] {
			binary.BigEndian.PutUint32(buf[o:], uint32(b[0]))
			binary.BigEndian.PutUint32(buf[o+4:], uint32(b[1]))
			o += 8
		}
	}
	hdr := o
	n := hdr + copy(buf[hdr:], s.Payload)
	f := buf[:n]

	copy(f[0:6], s.DstMAC[:])
	copy(f[6:12], s.SrcMAC[:])
	binary.BigEndian.PutUint16(f[ethType:], etherTypeIPv4)

	ttl := s.TTL
	if ttl == 0 {
		ttl = 64
	}
	f[ipVerIHL] = 0x45
	f[ipOff+1] = 0 // TOS
	binary.BigEndian.PutUint16(f[ipTotalLen:], uint16(n-ipOff))
	binary.BigEndian.PutUint16(f[ipOff+4:], 0) // ID: DF set, never fragmented
	binary.BigEndian.PutUint16(f[ipFlagsFrag:], ipDF)
	f[ipTTL] = ttl
	f[ipProto] = protoTCP
	binary.BigEndian.PutUint16(f[ipCsum:], 0)
	copy(f[ipSrc:], s.Src[:])
	copy(f[ipDst:], s.Dst[:])
	binary.BigEndian.PutUint16(f[ipCsum:], ^uint16(Checksum(f[ipOff:tcp], 0)))

	binary.BigEndian.PutUint16(f[tcp+tcpSrcPort:], s.SrcPort)
	binary.BigEndian.PutUint16(f[tcp+tcpDstPort:], s.DstPort)
	binary.BigEndian.PutUint32(f[tcp+tcpSeq:], uint32(s.Seq))
	binary.BigEndian.PutUint32(f[tcp+tcpAck:], uint32(s.Ack))
	f[tcp+tcpDataOff] = byte((hdr-tcp)/4) << 4
	f[tcp+tcpFlags] = s.Flags
	binary.BigEndian.PutUint16(f[tcp+tcpWindow:], s.Window)
	binary.BigEndian.PutUint32(f[tcp+tcpCsum:], 0) // checksum and urgent pointer

	*p = Packet{frame: f, tcp: tcp, payload: uint8(hdr)}
	p.fullTCPChecksum()
	p.Parse(f, false, false) // records the option offsets; cannot fail
	return n
}

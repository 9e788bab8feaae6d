// Package rewrite holds header views over Ethernet/IPv4/TCP frames and the
// field rewrites the gateway performs on them, each keeping the IPv4 and TCP
// checksums valid. It is pure: no I/O, no allocation per packet.
package rewrite

import "encoding/binary"

// EthLen is the length of the Ethernet header every frame starts with.
const EthLen = 14

// TCP flag bits.
const (
	FIN uint8 = 1 << iota
	SYN
	RST
	PSH
	ACK
	URG
	ECE
	CWR
)

// Reason says why a frame was rejected; zero means it was accepted.
type Reason uint8

const (
	OK                  Reason = iota
	ReasonShort                // shorter than Ethernet+IPv4+TCP minimum headers
	ReasonNotIPv4              // EtherType or IP version is not IPv4
	ReasonBadIHL               // IHL < 5 or header beyond the frame
	ReasonBadLength            // IPv4 total length < headers or > bytes captured
	ReasonFragment             // MF set or fragment offset non-zero
	ReasonNotTCP               // IP protocol is not TCP
	ReasonBadDataOffset        // TCP data offset < 5 or beyond the IP payload
	ReasonBadOption            // a TCP option with an impossible length
	ReasonBadChecksum          // IPv4 or TCP checksum wrong (when verified)
	NumReasons                 // count of reasons, for counter arrays
)

var reasonNames = [NumReasons]string{
	OK:                  "ok",
	ReasonShort:         "short",
	ReasonNotIPv4:       "not_ipv4",
	ReasonBadIHL:        "bad_ihl",
	ReasonBadLength:     "bad_length",
	ReasonFragment:      "fragment",
	ReasonNotTCP:        "not_tcp",
	ReasonBadDataOffset: "bad_data_offset",
	ReasonBadOption:     "bad_option",
	ReasonBadChecksum:   "bad_checksum",
}

// String names the reason in snake_case for metrics and status.
func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// MaxSACK is the largest number of SACK blocks an option can carry.
const MaxSACK = 4

// Header layout. IPv4 offsets are absolute within the frame (the IPv4 header
// always follows a plain Ethernet header); TCP offsets are relative to the
// TCP header start.
const (
	ethType = 12

	ipOff       = EthLen
	ipMinLen    = 20
	ipVerIHL    = ipOff + 0
	ipTotalLen  = ipOff + 2
	ipFlagsFrag = ipOff + 6
	ipTTL       = ipOff + 8
	ipProto     = ipOff + 9
	ipCsum      = ipOff + 10
	ipSrc       = ipOff + 12
	ipDst       = ipOff + 16

	tcpMinLen  = 20
	tcpMaxLen  = 60 // data offset 15 words: 40 bytes of options
	tcpSrcPort = 0
	tcpDstPort = 2
	tcpSeq     = 4
	tcpAck     = 8
	tcpDataOff = 12
	tcpFlags   = 13
	tcpWindow  = 14
	tcpCsum    = 16

	etherTypeIPv4 = 0x0800
	protoTCP      = 6
	ipMF          = 0x2000
	ipDF          = 0x4000
	ipFragOffMask = 0x1fff
)

// TCP option kinds and their fixed lengths.
const (
	optEOL      = 0
	optNOP      = 1
	optMSS      = 2
	optWS       = 3
	optSACKPerm = 4
	optSACK     = 5
	optTS       = 8

	optMSSLen      = 4
	optWSLen       = 3
	optSACKPermLen = 2
	optTSLen       = 10
	sackBlockLen   = 8
)

// Packet is a validated view of one Ethernet/IPv4/TCP frame. Parse fills it;
// accessors after a successful Parse do no bounds checks of their own beyond
// Go's. The zero value is unusable until Parse returns OK. Packet keeps the
// byte offsets of the options it found so setters can rewrite them in place.
type Packet struct {
	frame []byte // Ethernet header to the end of the IP total length

	// Offsets into frame. Headers end by byte 14+60+60, so a byte holds
	// them all; option offsets point at the kind byte, 0 means absent.
	tcp      uint8
	payload  uint8
	mss      uint8
	ws       uint8
	sackPerm uint8
	ts       uint8
	sack     uint8
	nsack    uint8

	csumPartial bool
	keepOffload bool   // Finish leaves a partial checksum for the kernel (KeepOffloads)
	gsoSize     uint16 // payload bytes per segment of a super-frame; 0 for a plain frame
}

// Offload is what a frame asks of the kernel on transmit, in the terms of a
// packet socket's virtio_net_hdr (PACKET_VNET_HDR). The zero value asks
// nothing: the frame's checksums are complete and it fits the MTU.
type Offload struct {
	CsumStart  uint16 // frame offset the TCP checksum's sum starts at (the TCP header); 0: checksum complete
	CsumOffset uint16 // the checksum field's offset from CsumStart
	HdrLen     uint16 // bytes of headers, Ethernet to payload, each segment repeats
	GSOSize    uint16 // payload bytes per segment to cut a super-frame into; 0: send it as one frame
	// ECN marks a super-frame whose first segment carries CWR: only that
	// segment keeps it (the kernel's SKB_GSO_TCP_ECN).
	ECN bool
}

// KeepOffloads makes Finish leave a partial TCP checksum partial, the
// pseudo-header sum in its field, for the kernel or the next host to
// complete, and records gsoSize, the segment size of a super-frame the
// kernel handed up whole (0 for a plain frame). A super-frame's checksum is
// always left partial, as segmentation needs it so. Call after Parse, before
// the setters.
func (p *Packet) KeepOffloads(gsoSize uint16) {
	p.keepOffload = true
	p.gsoSize = gsoSize
}

// Offload says what the frame needs of the kernel on transmit, once Finish
// has run.
func (p *Packet) Offload() Offload {
	if !p.keepOffload || !p.csumPartial {
		return Offload{}
	}
	o := Offload{CsumStart: uint16(p.tcp), CsumOffset: tcpCsum, HdrLen: uint16(p.payload)}
	// Trimmed to one segment or less, a super-frame goes as a plain frame.
	if p.gsoSize > 0 && p.PayloadLen() > int(p.gsoSize) {
		o.GSOSize = p.gsoSize
		o.ECN = p.Flags()&CWR != 0
	}
	return o
}

// Parse validates frame (starting at the Ethernet header) as IPv4/TCP and
// fills p. csumPartial says the TCP checksum was not filled in by the sender
// (TP_STATUS_CSUMNOTREADY): Finish then computes it in full. When csumPartial
// is false and verify is true, the IPv4 and TCP checksums are verified and a
// mismatch returns ReasonBadChecksum. The frame may carry trailing Ethernet
// padding beyond the IPv4 total length: it is trimmed from the view.
//
// A frame that carries an option the gateway rewrites (MSS, window scale,
// SACK-permitted, timestamps, SACK) twice, or with the wrong length, or an
// option that runs past the header, is rejected with ReasonBadOption:
// Linux's receiver acts on the last copy and skips malformed ones, and a
// copy the gateway did not translate would reach the other side with the
// sender's numbers. No TCP stack sends such frames.
func (p *Packet) Parse(frame []byte, csumPartial, verify bool) Reason {
	r := p.parse(frame, csumPartial, verify)
	if r != OK {
		*p = Packet{} // a rejected frame leaves no stale view behind
	}
	return r
}

func (p *Packet) parse(frame []byte, csumPartial, verify bool) Reason {
	if len(frame) < EthLen+ipMinLen+tcpMinLen {
		return ReasonShort
	}
	if binary.BigEndian.Uint16(frame[ethType:]) != etherTypeIPv4 || frame[ipVerIHL]>>4 != 4 {
		return ReasonNotIPv4
	}
	ihl := int(frame[ipVerIHL]&0x0f) * 4
	if ihl < ipMinLen || ipOff+ihl > len(frame) {
		return ReasonBadIHL
	}
	total := int(binary.BigEndian.Uint16(frame[ipTotalLen:]))
	if total < ihl || ipOff+total > len(frame) {
		return ReasonBadLength
	}
	if ff := binary.BigEndian.Uint16(frame[ipFlagsFrag:]); ff&ipMF != 0 || ff&ipFragOffMask != 0 {
		return ReasonFragment
	}
	if frame[ipProto] != protoTCP {
		return ReasonNotTCP
	}
	if total < ihl+tcpMinLen {
		return ReasonBadLength
	}
	frame = frame[:ipOff+total] // drop Ethernet padding
	tcp := ipOff + ihl
	doff := int(frame[tcp+tcpDataOff]>>4) * 4
	if doff < tcpMinLen || tcp+doff > len(frame) {
		return ReasonBadDataOffset
	}

	*p = Packet{
		frame:       frame,
		tcp:         uint8(tcp),
		payload:     uint8(tcp + doff),
		csumPartial: csumPartial,
	}
	if r := p.parseOptions(tcp+tcpMinLen, tcp+doff); r != OK {
		return r
	}
	if verify && !csumPartial && !p.VerifyChecksums() {
		return ReasonBadChecksum
	}
	return OK
}

// parseOptions walks the options in frame[i:end] and records the offsets of
// those the gateway rewrites or reads.
func (p *Packet) parseOptions(i, end int) Reason {
	b := p.frame
	for i < end {
		kind := b[i]
		if kind == optEOL {
			break
		}
		if kind == optNOP {
			i++
			continue
		}
		if i+1 >= end {
			return ReasonBadOption
		}
		n := int(b[i+1])
		if n < 2 || i+n > end {
			return ReasonBadOption
		}
		var slot *uint8
		want := n
		switch kind {
		case optMSS:
			slot, want = &p.mss, optMSSLen
		case optWS:
			slot, want = &p.ws, optWSLen
		case optSACKPerm:
			slot, want = &p.sackPerm, optSACKPermLen
		case optTS:
			slot, want = &p.ts, optTSLen
		case optSACK:
			k := (n - 2) / sackBlockLen
			if (n-2)%sackBlockLen != 0 || k < 1 || k > MaxSACK {
				return ReasonBadOption
			}
			slot = &p.sack
			p.nsack = uint8(k)
		}
		if slot != nil {
			// A second copy of an option the gateway rewrites would
			// reach the other side untranslated.
			if n != want || *slot != 0 {
				return ReasonBadOption
			}
			*slot = uint8(i)
		}
		i += n
	}
	return OK
}

// Frame returns the frame bytes (Ethernet header included, trimmed to the IP
// total length).
func (p *Packet) Frame() []byte { return p.frame }

// CopyTo copies the frame into buf (which must be at least len(p.Frame())
// bytes) and makes q a view of the copy without parsing again. Returns false
// if buf is too small.
func (p *Packet) CopyTo(buf []byte, q *Packet) bool {
	if len(buf) < len(p.frame) {
		return false
	}
	n := copy(buf, p.frame)
	*q = *p
	q.frame = buf[:n]
	return true
}

// Accessors.

func (p *Packet) SrcIP() [4]byte { return [4]byte(p.frame[ipSrc : ipSrc+4]) }
func (p *Packet) DstIP() [4]byte { return [4]byte(p.frame[ipDst : ipDst+4]) }
func (p *Packet) SrcPort() uint16 {
	return binary.BigEndian.Uint16(p.frame[int(p.tcp)+tcpSrcPort:])
}
func (p *Packet) DstPort() uint16 {
	return binary.BigEndian.Uint16(p.frame[int(p.tcp)+tcpDstPort:])
}
func (p *Packet) Seq() Seq     { return Seq(binary.BigEndian.Uint32(p.frame[int(p.tcp)+tcpSeq:])) }
func (p *Packet) Ack() Seq     { return Seq(binary.BigEndian.Uint32(p.frame[int(p.tcp)+tcpAck:])) }
func (p *Packet) Flags() uint8 { return p.frame[int(p.tcp)+tcpFlags] }
func (p *Packet) Window() uint16 {
	return binary.BigEndian.Uint16(p.frame[int(p.tcp)+tcpWindow:])
}
func (p *Packet) Payload() []byte { return p.frame[p.payload:] }
func (p *Packet) PayloadLen() int { return len(p.frame) - int(p.payload) }

// SegLen is the sequence space the segment occupies: payload + SYN + FIN.
func (p *Packet) SegLen() uint32 {
	n := uint32(p.PayloadLen())
	f := p.Flags()
	if f&SYN != 0 {
		n++
	}
	if f&FIN != 0 {
		n++
	}
	return n
}

func (p *Packet) MSS() (uint16, bool) {
	if p.mss == 0 {
		return 0, false
	}
	return binary.BigEndian.Uint16(p.frame[int(p.mss)+2:]), true
}

func (p *Packet) WScale() (uint8, bool) {
	if p.ws == 0 {
		return 0, false
	}
	return p.frame[int(p.ws)+2], true
}

func (p *Packet) SACKPermitted() bool { return p.sackPerm != 0 }

func (p *Packet) Timestamps() (val, ecr uint32, ok bool) {
	if p.ts == 0 {
		return 0, 0, false
	}
	o := int(p.ts) + 2
	return binary.BigEndian.Uint32(p.frame[o:]), binary.BigEndian.Uint32(p.frame[o+4:]), true
}

func (p *Packet) NumSACK() int { return int(p.nsack) }

// SACKBlock returns block i (0 <= i < NumSACK()).
func (p *Packet) SACKBlock(i int) (left, right Seq) {
	o := int(p.sack) + 2 + i*sackBlockLen
	return Seq(binary.BigEndian.Uint32(p.frame[o:])), Seq(binary.BigEndian.Uint32(p.frame[o+4:]))
}

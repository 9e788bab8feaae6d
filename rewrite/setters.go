package rewrite

import "encoding/binary"

// Setters. Each updates the IPv4 and/or TCP checksum incrementally (RFC 1624).
// While the TCP checksum is partial (Parse with csumPartial) it is left alone:
// Finish computes it in full from the final bytes.

func (p *Packet) SetSrcIP(ip [4]byte) { p.setAddr(ipSrc, ip) }
func (p *Packet) SetDstIP(ip [4]byte) { p.setAddr(ipDst, ip) }

// setAddr rewrites an IPv4 address, which both the IPv4 header checksum and
// the TCP pseudo-header cover.
func (p *Packet) setAddr(off int, ip [4]byte) {
	b := p.frame[off : off+4]
	old := sum32(binary.BigEndian.Uint32(b))
	copy(b, ip[:])
	new := sum32(binary.BigEndian.Uint32(b))
	p.adjustIP(old, new)
	p.adjustTCP(old, new)
}

func (p *Packet) SetSeq(s Seq) { p.setTCP32(tcpSeq, uint32(s)) }
func (p *Packet) SetAck(s Seq) { p.setTCP32(tcpAck, uint32(s)) }

// setTCP32 rewrites a 32-bit field at a word-aligned offset in the TCP
// header.
func (p *Packet) setTCP32(rel int, v uint32) {
	b := p.frame[int(p.tcp)+rel:]
	old := binary.BigEndian.Uint32(b)
	binary.BigEndian.PutUint32(b, v)
	p.adjustTCP(sum32(old), sum32(v))
}

// setTCP16 rewrites a 16-bit word at an even offset in the TCP header.
func (p *Packet) setTCP16(rel int, v uint16) {
	b := p.frame[int(p.tcp)+rel:]
	old := binary.BigEndian.Uint16(b)
	binary.BigEndian.PutUint16(b, v)
	p.adjustTCP(old, v)
}

// SetFlags rewrites the eight flag bits; the data offset and reserved bits
// sharing the checksum word are kept.
func (p *Packet) SetFlags(f uint8) {
	w := binary.BigEndian.Uint16(p.frame[int(p.tcp)+tcpDataOff:])
	p.setTCP16(tcpDataOff, w&0xff00|uint16(f))
}

func (p *Packet) SetWindow(w uint16) { p.setTCP16(tcpWindow, w) }

// SetMSS rewrites an existing MSS option; no-op if absent.
func (p *Packet) SetMSS(mss uint16) {
	if p.mss == 0 {
		return
	}
	o := int(p.mss) + 2
	old := p.spanSum(o, 2)
	binary.BigEndian.PutUint16(p.frame[o:], mss)
	p.adjustTCP(old, p.spanSum(o, 2))
}

// SetTimestamps rewrites an existing timestamp option; no-op if absent.
func (p *Packet) SetTimestamps(val, ecr uint32) {
	if p.ts == 0 {
		return
	}
	p.setPair(int(p.ts)+2, val, ecr)
}

// SetSACKBlock rewrites block i (0 <= i < NumSACK()). An out-of-range i is
// ignored rather than written over neighbouring bytes.
func (p *Packet) SetSACKBlock(i int, left, right Seq) {
	if i < 0 || i >= int(p.nsack) {
		return
	}
	p.setPair(int(p.sack)+2+i*sackBlockLen, uint32(left), uint32(right))
}

// setPair writes two 32-bit option values at frame offset o, keeping the TCP
// checksum.
func (p *Packet) setPair(o int, a, b uint32) {
	f := p.frame[o : o+8]
	if o&1 != 0 {
		old := p.spanSum(o, 8)
		binary.BigEndian.PutUint32(f, a)
		binary.BigEndian.PutUint32(f[4:], b)
		p.adjustTCP(old, p.spanSum(o, 8))
		return
	}
	// Word-aligned, the usual case (Linux pads options with NOPs): the
	// values are whole checksum words.
	old := fold32(uint32(sum32(binary.BigEndian.Uint32(f))) + uint32(sum32(binary.BigEndian.Uint32(f[4:]))))
	binary.BigEndian.PutUint32(f, a)
	binary.BigEndian.PutUint32(f[4:], b)
	p.adjustTCP(old, fold32(uint32(sum32(a))+uint32(sum32(b))))
}

// TruncateSACK keeps the first n blocks and turns the rest of the option into
// NOPs (n == 0 removes the option, all its bytes become NOPs); the header
// length does not change.
func (p *Packet) TruncateSACK(n int) {
	if n < 0 || n >= int(p.nsack) {
		return
	}
	o := int(p.sack)
	size := 2 + int(p.nsack)*sackBlockLen
	old := p.spanSum(o, size)
	keep := 0
	if n > 0 {
		keep = 2 + n*sackBlockLen
		p.frame[o+1] = byte(keep)
	}
	for i := o + keep; i < o+size; i++ {
		p.frame[i] = optNOP
	}
	p.adjustTCP(old, p.spanSum(o, size))
	p.nsack = uint8(n)
	if n == 0 {
		p.sack = 0
	}
}

// TrimPayload shortens the segment to n payload bytes (n <= PayloadLen),
// updating the IPv4 total length and both checksums, and the frame view.
// FIN and PSH go with the cut tail, as in the kernel's tcp_fragment: a FIN
// left on the head would end the stream before the bytes cut off.
// n outside [0, PayloadLen) leaves the packet unchanged.
func (p *Packet) TrimPayload(n int) {
	if n < 0 || n >= p.PayloadLen() {
		return
	}
	if f := p.Flags(); f&(FIN|PSH) != 0 {
		p.SetFlags(f &^ (FIN | PSH))
	}
	end := int(p.payload) + n
	b := p.frame[ipTotalLen:]
	old := binary.BigEndian.Uint16(b)
	total := uint16(end - ipOff)
	binary.BigEndian.PutUint16(b, total)
	p.adjustIP(old, total)
	p.frame = p.frame[:end]
	// The pseudo-header length changes and the dropped bytes leave the sum;
	// trimming is rare, so recompute rather than subtract them, unless
	// Finish will leave the checksum partial.
	if !p.csumPartial && !p.leftPartial() {
		p.fullTCPChecksum()
	}
}

// Finish completes the checksums: if the TCP checksum was partial, it is
// computed in full. Under KeepOffloads a partial checksum, and a
// super-frame's, is left partial instead: its field gets the sum of the
// final pseudo-header (addresses and TCP length), which is all the kernel's
// completion, or a segmentation, needs. Call once after all setters, before
// transmit.
func (p *Packet) Finish() {
	if p.leftPartial() {
		binary.BigEndian.PutUint16(p.frame[int(p.tcp)+tcpCsum:], uint16(p.pseudoSum()))
		p.csumPartial = true
		return
	}
	if p.csumPartial {
		p.fullTCPChecksum()
		p.csumPartial = false
	}
}

// leftPartial reports whether Finish leaves the TCP checksum partial.
func (p *Packet) leftPartial() bool {
	return p.keepOffload && (p.csumPartial || p.gsoSize > 0)
}

// VerifyChecksums reports whether both the IPv4 header checksum and the TCP
// checksum (with pseudo-header) are correct. For tests and for Parse(verify).
func (p *Packet) VerifyChecksums() bool {
	return Checksum(p.frame[ipOff:p.tcp], 0) == 0xffff &&
		Checksum(p.frame[p.tcp:], p.pseudoSum()) == 0xffff
}

// pseudoSum is the ones-complement sum of the TCP pseudo-header.
func (p *Packet) pseudoSum() uint32 {
	return Checksum(p.frame[ipSrc:ipDst+4], protoTCP+uint32(len(p.frame)-int(p.tcp)))
}

func (p *Packet) fullTCPChecksum() {
	c := p.frame[int(p.tcp)+tcpCsum:]
	c[0], c[1] = 0, 0
	binary.BigEndian.PutUint16(c, ^uint16(Checksum(p.frame[p.tcp:], p.pseudoSum())))
}

// spanSum sums the checksum words covering frame[off:off+n]. Options need
// not be word-aligned, and the TCP checksum sums words from the (even) TCP
// header start, so the span is widened to even bounds.
func (p *Packet) spanSum(off, n int) uint16 {
	return sumWords(p.frame[off&^1 : (off+n+1)&^1])
}

func (p *Packet) adjustIP(old, new uint16) {
	b := p.frame[ipCsum:]
	binary.BigEndian.PutUint16(b, csumAdjust(binary.BigEndian.Uint16(b), old, new))
}

func (p *Packet) adjustTCP(old, new uint16) {
	if p.csumPartial {
		return
	}
	b := p.frame[int(p.tcp)+tcpCsum:]
	binary.BigEndian.PutUint16(b, csumAdjust(binary.BigEndian.Uint16(b), old, new))
}

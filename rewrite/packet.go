// Package rewrite holds header views over Ethernet/IPv4/TCP frames and the
// field rewrites the gateway performs on them, each keeping the IPv4 and TCP
// checksums valid. It is pure: no I/O, no allocation per packet.
package rewrite

// IMPLEMENTATION CONTRACT (to be filled in; signatures are fixed).

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
	OK Reason = iota
	ReasonShort          // shorter than Ethernet+IPv4+TCP minimum headers
	ReasonNotIPv4        // EtherType or IP version is not IPv4
	ReasonBadIHL         // IHL < 5 or header beyond the frame
	ReasonBadLength      // IPv4 total length < headers or > bytes captured
	ReasonFragment       // MF set or fragment offset non-zero
	ReasonNotTCP         // IP protocol is not TCP
	ReasonBadDataOffset  // TCP data offset < 5 or beyond the IP payload
	ReasonBadOption      // a TCP option with an impossible length
	ReasonBadChecksum    // IPv4 or TCP checksum wrong (when verified)
	NumReasons           // count of reasons, for counter arrays
)

// String names the reason in snake_case for metrics and status.
func (r Reason) String() string

// MaxSACK is the largest number of SACK blocks an option can carry.
const MaxSACK = 4

// Packet is a validated view of one Ethernet/IPv4/TCP frame. Parse fills it;
// accessors after a successful Parse do no bounds checks of their own beyond
// Go's. The zero value is unusable until Parse returns OK. Packet keeps the
// byte offsets of the options it found so setters can rewrite them in place.
type Packet struct {
	// unexported fields: frame []byte (trimmed to Ethernet + IP total length),
	// ip/tcp header offsets, option offsets (0 = absent), sack block count,
	// csumPartial flag.
}

// Parse validates frame (starting at the Ethernet header) as IPv4/TCP and
// fills p. csumPartial says the TCP checksum was not filled in by the sender
// (TP_STATUS_CSUMNOTREADY): Finish then computes it in full. When csumPartial
// is false and verify is true, the IPv4 and TCP checksums are verified and a
// mismatch returns ReasonBadChecksum. The frame may carry trailing Ethernet
// padding beyond the IPv4 total length: it is trimmed from the view.
func (p *Packet) Parse(frame []byte, csumPartial, verify bool) Reason

// Frame returns the frame bytes (Ethernet header included, trimmed to the IP
// total length).
func (p *Packet) Frame() []byte

// CopyTo copies the frame into buf (which must be at least len(p.Frame())
// bytes) and makes q a view of the copy without parsing again. Returns false
// if buf is too small.
func (p *Packet) CopyTo(buf []byte, q *Packet) bool

// Accessors.
func (p *Packet) SrcIP() [4]byte
func (p *Packet) DstIP() [4]byte
func (p *Packet) SrcPort() uint16
func (p *Packet) DstPort() uint16
func (p *Packet) Seq() Seq
func (p *Packet) Ack() Seq
func (p *Packet) Flags() uint8
func (p *Packet) Window() uint16
func (p *Packet) Payload() []byte
func (p *Packet) PayloadLen() int
// SegLen is the sequence space the segment occupies: payload + SYN + FIN.
func (p *Packet) SegLen() uint32
func (p *Packet) MSS() (uint16, bool)
func (p *Packet) WScale() (uint8, bool)
func (p *Packet) SACKPermitted() bool
func (p *Packet) Timestamps() (val, ecr uint32, ok bool)
func (p *Packet) NumSACK() int
func (p *Packet) SACKBlock(i int) (left, right Seq)

// Setters. Each updates the IPv4 and/or TCP checksum incrementally (RFC 1624).
func (p *Packet) SetSrcIP(ip [4]byte)
func (p *Packet) SetDstIP(ip [4]byte)
func (p *Packet) SetSeq(s Seq)
func (p *Packet) SetAck(s Seq)
func (p *Packet) SetFlags(f uint8)
func (p *Packet) SetWindow(w uint16)
// SetMSS rewrites an existing MSS option; no-op if absent.
func (p *Packet) SetMSS(mss uint16)
// SetTimestamps rewrites an existing timestamp option; no-op if absent.
func (p *Packet) SetTimestamps(val, ecr uint32)
// SetSACKBlock rewrites block i (0 <= i < NumSACK()).
func (p *Packet) SetSACKBlock(i int, left, right Seq)
// TruncateSACK keeps the first n blocks and turns the rest of the option into
// NOPs (n == 0 removes the option, all its bytes become NOPs); the header
// length does not change.
func (p *Packet) TruncateSACK(n int)
// TrimPayload shortens the segment to n payload bytes (n <= PayloadLen),
// updating the IPv4 total length and both checksums, and the frame view.
func (p *Packet) TrimPayload(n int)

// Finish completes the checksums: if the TCP checksum was partial, it is
// computed in full. Call once after all setters, before transmit.
func (p *Packet) Finish()

// VerifyChecksums reports whether both the IPv4 header checksum and the TCP
// checksum (with pseudo-header) are correct. For tests and for Parse(verify).
func (p *Packet) VerifyChecksums() bool

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
	TTL              uint8 // 0 means 64
}

// Build writes the frame described by s into buf (Ethernet header with
// EtherType IPv4, IPv4 header with DF set, TCP header and options) with full
// checksums, parses it into p and returns the frame length. buf must hold at
// least 14+20+60 bytes.
func Build(buf []byte, s *Spec, p *Packet) int

// Checksum returns the ones-complement sum of b folded to 16 bits and added to
// initial, not complemented. Used to compute IPv4 and TCP checksums.
func Checksum(b []byte, initial uint32) uint32

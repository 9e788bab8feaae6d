package rewrite

import (
	"encoding/binary"
	"math/bits"
)

// Checksum returns the ones-complement sum of b folded to 16 bits and added to
// initial, not complemented. Used to compute IPv4 and TCP checksums.
//
// The sum is taken over big-endian 64-bit words with end-around carry: since
// 2^16 ≡ 1 (mod 2^16-1), folding the wide sum gives the same result as the
// RFC 1071 sum of 16-bit words, at a quarter of the additions.
func Checksum(b []byte, initial uint32) uint32 {
	sum := uint64(initial)
	var carry uint64
	for len(b) >= 32 {
		_ = b[31] // one bounds check for the four loads
		sum, carry = bits.Add64(sum, binary.BigEndian.Uint64(b[0:8]), carry)
		sum, carry = bits.Add64(sum, binary.BigEndian.Uint64(b[8:16]), carry)
		sum, carry = bits.Add64(sum, binary.BigEndian.Uint64(b[16:24]), carry)
		sum, carry = bits.Add64(sum, binary.BigEndian.Uint64(b[24:32]), carry)
		b = b[32:]
	}
	for len(b) >= 8 {
		sum, carry = bits.Add64(sum, binary.BigEndian.Uint64(b), carry)
		b = b[8:]
	}
	if len(b) >= 4 {
		sum, carry = bits.Add64(sum, uint64(binary.BigEndian.Uint32(b)), carry)
		b = b[4:]
	}
	if len(b) >= 2 {
		sum, carry = bits.Add64(sum, uint64(binary.BigEndian.Uint16(b)), carry)
		b = b[2:]
	}
	if len(b) == 1 {
		// An odd trailing byte is the high half of a zero-padded word.
		sum, carry = bits.Add64(sum, uint64(b[0])<<8, carry)
	}
	// End-around carry; adding it can carry once more only if sum wrapped
	// to zero, after which adding 1 cannot overflow.
	sum, carry = bits.Add64(sum, 0, carry)
	sum += carry
	return uint32(fold64(sum))
}

// fold64 folds a 64-bit ones-complement sum to 16 bits. The result is zero
// only when s is zero.
func fold64(s uint64) uint16 {
	s = (s & 0xffffffff) + (s >> 32)
	s = (s & 0xffffffff) + (s >> 32)
	s = (s & 0xffff) + (s >> 16)
	s = (s & 0xffff) + (s >> 16)
	s = (s & 0xffff) + (s >> 16)
	return uint16(s)
}

// fold32 folds a 32-bit ones-complement sum to 16 bits: two end-around
// carries suffice for any uint32.
func fold32(s uint32) uint16 {
	s = (s & 0xffff) + (s >> 16)
	s = (s & 0xffff) + (s >> 16)
	return uint16(s)
}

// sum32 is the ones-complement sum of the two 16-bit halves of v.
func sum32(v uint32) uint16 { return fold32(v>>16 + v&0xffff) }

// sumWords is the folded sum of an even-length span of a header: a plain
// word loop beats Checksum's setup for the few bytes an option holds.
// len(b) must be even and below 2^17 so the uint32 cannot overflow.
func sumWords(b []byte) uint16 {
	var s uint32
	for ; len(b) >= 2; b = b[2:] {
		s += uint32(b[0])<<8 | uint32(b[1])
	}
	return fold32(s)
}

// csumAdjust updates checksum hc for data whose ones-complement sum changed
// from old to new: RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'). old and new may
// each be the sum of several words (negation distributes over the sum).
func csumAdjust(hc, old, new uint16) uint16 {
	return ^fold32(uint32(^hc) + uint32(^old) + uint32(new))
}

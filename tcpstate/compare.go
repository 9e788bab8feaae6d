package tcpstate

import "encoding/binary"

// The two reply streams are compared at common offsets through sums, so
// neither stream is copied. Each leg keeps sums of 64-byte sub-blocks for
// its current and previous 1 KiB block — fine enough that an equal-length
// difference (a Date header) is followed by agreeing sub-blocks even in a
// small reply — and sums of its last cmpRing whole blocks, so legs up to
// cmpRing KiB apart are still compared, coarsely.
const (
	cmpBlock = 1024
	cmpSub   = 64
	cmpSubs  = cmpBlock / cmpSub
	cmpRing  = 16
	cmpWord  = 8 // bytes per word of a sub-block's sum
)

// A sub-block's sum is NH (the hash inside UMAC) over its eight words:
// each word's two 32-bit halves, each plus a key of its position, are
// multiplied, and the products summed modulo 2^64. Two sub-blocks of equal
// length whose content is unrelated to the keys collide with probability
// about 2^-32 (with random keys NH guarantees it; with these, one value of a
// word's half hides a change to its other half, and none of the sixteen is
// text), where a plain sum of words times keys lets changes in the high
// bytes of two words cancel (the top bit of two words, always). The
// multiplications are independent, where CRC32-C's instructions form one
// chain: 1.4 times its speed, and CRC32-C was a fifth of the loop's time in
// a download with offloads on. The words are read at fixed stream offsets,
// so the sum does not depend on how the leg cut its stream into segments;
// whole sub-blocks are summed unrolled (1.8 times the word loop's speed).
var subKeys = [2 * cmpSub / cmpWord]uint32{
	0x7f4a7c15, 0x9e3779b9, 0x1ce4e5b9, 0xbf58476d, 0x133111eb, 0x94d049bb, 0x6659fd93, 0xd6e8feb8,
	0x78bd642f, 0xa0761d64, 0xa0b428db, 0xe7037ed1, 0x9c88c6e3, 0x8ebc6af0, 0x75374cc3, 0x589965cc,
}

// nh is word w's term at position i of its sub-block.
func nh(w uint64, i int) uint64 {
	return uint64(uint32(w)+subKeys[2*i]) * uint64(uint32(w>>32)+subKeys[2*i+1])
}

// streamSum hashes one leg's reply stream in order.
type streamSum struct {
	// off counts the bytes hashed, contiguous from the stream's start, in
	// 64 bits: a connection's reply passes 4 GiB (a large download, or a
	// keep-alive connection's many replies), and the comparison's order
	// tests must not turn round there. Segments give 32-bit offsets;
	// past relates them to it.
	off    uint64
	subCur uint64 // NH of the current sub-block's whole words so far
	tail   uint64 // the bytes after its last whole word, little-endian
	subs   [2][cmpSubs]uint32
	ring   [cmpRing]uint32 // whole blocks' sums (blockSum)
}

func (s *streamSum) add(data []byte) {
	for len(data) > 0 {
		if s.off%cmpWord != 0 || len(data) < cmpWord {
			// A byte at a time up to the next word: rare, as segments
			// hold whole words of the stream (1448 bytes are 181).
			s.tail |= uint64(data[0]) << (8 * (s.off % cmpWord))
			s.off++
			data = data[1:]
			if s.off%cmpWord == 0 {
				s.subCur += nh(s.tail, int((s.off-cmpWord)%cmpSub/cmpWord))
				s.tail = 0
				if s.off%cmpSub == 0 {
					s.endSub()
				}
			}
			continue
		}
		if s.off%cmpSub == 0 {
			for len(data) >= cmpSub {
				b := data[:cmpSub:cmpSub]
				s.subCur = nh(le64(b[0:]), 0) + nh(le64(b[8:]), 1) + nh(le64(b[16:]), 2) + nh(le64(b[24:]), 3) +
					nh(le64(b[32:]), 4) + nh(le64(b[40:]), 5) + nh(le64(b[48:]), 6) + nh(le64(b[56:]), 7)
				s.off += cmpSub
				s.endSub()
				data = data[cmpSub:]
			}
		}
		for len(data) >= cmpWord {
			s.subCur += nh(le64(data), int(s.off%cmpSub/cmpWord))
			s.off += cmpWord
			data = data[cmpWord:]
			if s.off%cmpSub == 0 {
				s.endSub()
				break
			}
		}
	}
}

func le64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }

// past is how far a segment's 32-bit stream offset lies past the leg's
// hashed prefix (negative: before it); a segment is never 2 GiB away.
func (s *streamSum) past(off uint32) int64 { return int64(int32(off - uint32(s.off))) }

// endSub files the sub-block that ends at s.off, and the block when it is
// the last of one.
func (s *streamSum) endSub() {
	last := uint32(s.off - 1) // the low bits place it: 4 GiB holds whole blocks
	blk := last / cmpBlock
	s.subs[blk%2][last%cmpBlock/cmpSub] = subDigest(s.subCur)
	s.subCur = 0
	if s.off%cmpBlock == 0 {
		s.ring[blk%cmpRing] = blockSum(&s.subs[blk%2])
	}
}

// subDigest folds a sub-block's 64-bit sum to the 32 bits kept: a bijective
// mix first, so every bit of the sum moves the top half.
func subDigest(sum uint64) uint32 {
	sum ^= sum >> 31
	sum *= 0xbf58476d1ce4e5b9
	sum ^= sum >> 29
	return uint32(sum >> 32)
}

// partialEqual reports whether both legs' unfinished sub-blocks agree; they
// must stand at the same offset.
func (s *streamSum) partialEqual(o *streamSum) bool {
	return s.subCur == o.subCur && s.tail == o.tail
}

// blockSum is a whole block's sum, a mix of its sub-blocks' sums: two
// blocks agree when all their sub-blocks do, and no byte is read twice.
// Each round of the mix is a bijection of the 32-bit state, so blocks that
// differ in one sub-block never collide; others collide as rarely as any
// 32-bit sums.
func blockSum(subs *[cmpSubs]uint32) uint32 {
	h := uint32(cmpSubs)
	for _, v := range subs {
		h = (h ^ v) * 0x9e3779b1
		h ^= h >> 15
	}
	return h
}

// subAt returns the sum of sub-block j of block k if the leg still holds it.
func (s *streamSum) subAt(k, j uint64) (uint32, bool) {
	if k*cmpSubs+j >= s.off/cmpSub || k+1 < s.off/cmpBlock {
		return 0, false
	}
	return s.subs[k%2][j], true
}

// blockAt returns the sum of whole block k if the leg still holds it.
func (s *streamSum) blockAt(k uint64) (uint32, bool) {
	done := s.off / cmpBlock
	if k >= done || done-k > cmpRing {
		return 0, false
	}
	return s.ring[k%cmpRing], true
}

// comparer holds both legs' sums and what comparing them found.
type comparer struct {
	legs       [2]streamSum
	unit       uint64 // next sub-block to compare, counted from the stream's start
	compared   bool   // at least one comparison made
	lastOK     bool   // the most recent comparison agreed
	recovered  uint32 // agreements that followed a disagreement
	uncompared uint32 // blocks the legs were too far apart to compare

	// splice: after a takeover, the client has the old leg's bytes up to
	// here; the new leg's bytes below it are duplicates it discards.
	splice uint32
}

// ahead reports whether leg i's segment at stream offset off starts past
// the leg's hashed prefix: a gap, which resync may skip.
func (c *comparer) ahead(i uint8, off uint32) bool { return c.legs[i].past(off) > 0 }

// resync handles a segment of leg i at off past the leg's hashed prefix,
// when the gateway acknowledged the leg up to acked: the part of the gap
// below acked will never be sent again (a shadow's segment lost on its way
// here is not resent once the gateway acknowledged past it on the client's
// behalf, the client holding the live leg's copy), and without this the
// comparison would stop there for good. Hashing and the comparison move to
// the first block boundary at or after the gap's lasting part, as the sums
// of the blocks it touched are not the leg's; what lies above acked may
// still come, resent. It reports whether it moved.
func (c *comparer) resync(i uint8, off, acked uint32) bool {
	s := &c.legs[i]
	end := s.past(acked)
	if end <= 0 {
		return false
	}
	next := (s.off + uint64(min(s.past(off), end)) + cmpBlock - 1) / cmpBlock * cmpBlock
	s.off, s.subCur, s.tail = next, 0, 0
	c.unit = max(c.unit, next/cmpSub)
	return true
}

// feed hashes the part of a segment at stream offset off that extends leg
// i's contiguous prefix, then compares what both legs now have in common.
// Out-of-order bytes are skipped: a retransmission fills the gap later, or
// resync skips it.
func (c *comparer) feed(i uint8, off uint32, data []byte) (compared, agreed int) {
	s := &c.legs[i]
	d := -s.past(off)
	if d < 0 || d >= int64(len(data)) {
		return 0, 0
	}
	s.add(data[d:])
	return c.compare()
}

// compare checks, in stream order, every sub-block both legs hold, whole
// blocks where one leg has gone too far ahead to hold the sub-blocks, and
// the partial sub-block when both legs stand at the same offset.
func (c *comparer) compare() (compared, agreed int) {
	a, b := &c.legs[0], &c.legs[1]
	common := min(a.off, b.off) / cmpSub
	for c.unit < common {
		k, j := c.unit/cmpSubs, c.unit%cmpSubs
		x, okA := a.subAt(k, j)
		y, okB := b.subAt(k, j)
		if okA && okB {
			c.record(x == y, &compared, &agreed)
			c.unit++
			continue
		}
		if min(a.off, b.off)/cmpBlock <= k {
			break // the trailing leg has not finished block k yet
		}
		x, okA = a.blockAt(k)
		y, okB = b.blockAt(k)
		if okA && okB {
			c.record(x == y, &compared, &agreed)
		} else {
			c.uncompared++
		}
		c.unit = (k + 1) * cmpSubs
	}
	if a.off == b.off && a.off%cmpSub != 0 {
		c.record(a.partialEqual(b), &compared, &agreed)
	}
	return compared, agreed
}

func (c *comparer) record(ok bool, compared, agreed *int) {
	*compared++
	if ok {
		*agreed++
		if c.compared && !c.lastOK {
			c.recovered++
		}
	}
	c.compared, c.lastOK = true, ok
}

// diverged reports whether the streams disagree at the most recent offsets
// compared: a failover would splice two different replies.
func (c *comparer) diverged() bool { return c != nil && c.compared && !c.lastOK }

// divergedAt is diverged judged for a takeover by leg i with the client
// holding the stream up to splice. A leg still short of it is not judged
// yet: it is compared on as it catches up, and the splice check judges it
// when its stream reaches what the client has. A lagging backup is compared
// by whole blocks, so the block with its Date header, when the header
// ticked past the primary's, differs until the next block is compared —
// one response later, which can be hundreds of milliseconds under load.
func (c *comparer) divergedAt(i uint8, splice uint32) bool {
	return c.diverged() && int32(uint32(c.legs[i].off)-splice) >= 0
}

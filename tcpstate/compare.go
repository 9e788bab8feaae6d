package tcpstate

import "hash/crc32"

// The two reply streams are compared at common offsets through CRCs, so
// neither stream is copied. Each leg keeps CRCs of 64-byte sub-blocks for
// its current and previous 1 KiB block — fine enough that an equal-length
// difference (a Date header) is followed by agreeing sub-blocks even in a
// small reply — and CRCs of its last cmpRing whole blocks, so legs up to
// cmpRing KiB apart are still compared, coarsely.
const (
	cmpBlock = 1024
	cmpSub   = 64
	cmpSubs  = cmpBlock / cmpSub
	cmpRing  = 16
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// streamSum hashes one leg's reply stream in order.
type streamSum struct {
	off    uint32 // bytes hashed, contiguous from the stream's start
	subCur uint32 // CRC of the current sub-block's bytes
	subs   [2][cmpSubs]uint32
	ring   [cmpRing]uint32 // whole blocks' sums (blockSum)
}

func (s *streamSum) add(data []byte) {
	for len(data) > 0 {
		n := min(cmpSub-int(s.off%cmpSub), len(data))
		s.subCur = crc32.Update(s.subCur, castagnoli, data[:n])
		s.off += uint32(n)
		data = data[n:]
		if s.off%cmpSub != 0 {
			continue
		}
		last := s.off - 1
		blk := last / cmpBlock
		s.subs[blk%2][last%cmpBlock/cmpSub] = s.subCur
		s.subCur = 0
		if s.off%cmpBlock == 0 {
			s.ring[blk%cmpRing] = blockSum(&s.subs[blk%2])
		}
	}
}

// blockSum is a whole block's sum, a mix of its sub-blocks' CRCs: two
// blocks agree when all their sub-blocks do. A CRC of the block's own bytes
// would read every byte a second time (it was a third of the loop's time in
// a download), and a CRC of the sub-blocks' CRCs needs them in a buffer,
// which escapes to the heap (crc32 calls through a function value): one
// allocation per KiB of every reply. Each round of the mix is a bijection of
// the 32-bit state, so blocks that differ in one sub-block never collide;
// others collide as rarely as any 32-bit sums.
func blockSum(subs *[cmpSubs]uint32) uint32 {
	h := uint32(cmpSubs)
	for _, v := range subs {
		h = (h ^ v) * 0x9e3779b1
		h ^= h >> 15
	}
	return h
}

// subCRC returns the CRC of sub-block j of block k if the leg still holds it.
func (s *streamSum) subCRC(k, j uint32) (uint32, bool) {
	if k*cmpSubs+j >= s.off/cmpSub || k+1 < s.off/cmpBlock {
		return 0, false
	}
	return s.subs[k%2][j], true
}

// blockCRC returns the CRC of whole block k if the leg still holds it.
func (s *streamSum) blockCRC(k uint32) (uint32, bool) {
	done := s.off / cmpBlock
	if k >= done || done-k > cmpRing {
		return 0, false
	}
	return s.ring[k%cmpRing], true
}

// comparer holds both legs' sums and what comparing them found.
type comparer struct {
	legs       [2]streamSum
	unit       uint32 // next sub-block to compare, counted from the stream's start
	compared   bool   // at least one comparison made
	lastOK     bool   // the most recent comparison agreed
	recovered  uint32 // agreements that followed a disagreement
	uncompared uint32 // blocks the legs were too far apart to compare

	// splice: after a takeover, the client has the old leg's bytes up to
	// here; the new leg's bytes below it are duplicates it discards.
	splice uint32
}

// feed hashes the part of a segment at stream offset off that extends leg
// i's contiguous prefix, then compares what both legs now have in common.
// Out-of-order bytes are skipped: a retransmission fills the gap later.
func (c *comparer) feed(i uint8, off uint32, data []byte) (compared, agreed int) {
	s := &c.legs[i]
	d := int32(s.off - off)
	if d < 0 || int(d) >= len(data) {
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
		x, okA := a.subCRC(k, j)
		y, okB := b.subCRC(k, j)
		if okA && okB {
			c.record(x == y, &compared, &agreed)
			c.unit++
			continue
		}
		if min(a.off, b.off)/cmpBlock <= k {
			break // the trailing leg has not finished block k yet
		}
		x, okA = a.blockCRC(k)
		y, okB = b.blockCRC(k)
		if okA && okB {
			c.record(x == y, &compared, &agreed)
		} else {
			c.uncompared++
		}
		c.unit = (k + 1) * cmpSubs
	}
	if a.off == b.off && a.off%cmpSub != 0 {
		c.record(a.subCur == b.subCur, &compared, &agreed)
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

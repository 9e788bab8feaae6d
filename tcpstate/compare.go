package tcpstate

import "hash/crc32"

// The two reply streams are compared at common offsets through CRCs of
// fixed blocks, so neither stream is copied: a flow keeps the last cmpRing
// block sums of each leg, enough to compare legs up to cmpRing*cmpBlock bytes
// apart.
const (
	cmpBlock = 1024
	cmpRing  = 32
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// streamSum hashes one leg's reply stream in order.
type streamSum struct {
	off  uint32 // bytes hashed, contiguous from the stream's start
	cur  uint32 // CRC of the current, partial block
	ring [cmpRing]uint32
}

// comparer holds both legs' sums and what comparing them found.
type comparer struct {
	legs      [2]streamSum
	next      uint32 // next whole block to compare
	compared  bool   // at least one comparison made
	lastOK    bool   // the most recent comparison agreed
	mismatch  bool   // a comparison disagreed since the flag was last cleared
	recovered uint32 // agreements that followed a disagreement
}

// feed hashes the part of a segment at stream offset off that extends leg
// i's contiguous prefix, then compares what both legs now have in common.
// Out-of-order bytes are skipped: a retransmission fills the gap later.
func (c *comparer) feed(i uint8, off uint32, data []byte) (compared, agreed int) {
	s := &c.legs[i]
	if d := int32(s.off - off); d < 0 || int(d) >= len(data) {
		return 0, 0
	} else {
		data = data[d:]
	}
	for len(data) > 0 {
		room := cmpBlock - int(s.off%cmpBlock)
		n := min(room, len(data))
		s.cur = crc32.Update(s.cur, castagnoli, data[:n])
		s.off += uint32(n)
		data = data[n:]
		if n == room {
			s.ring[(s.off/cmpBlock-1)%cmpRing] = s.cur
			s.cur = 0
		}
	}
	return c.compare()
}

// compare checks every whole block both legs hold, then the partial block
// when both legs stand at the same offset.
func (c *comparer) compare() (compared, agreed int) {
	a, b := &c.legs[0], &c.legs[1]
	doneA, doneB := a.off/cmpBlock, b.off/cmpBlock
	common := min(doneA, doneB)
	// Blocks that fell out of the ring of the leg that is ahead cannot be
	// compared any more.
	if oldest := max(doneA, doneB); oldest > cmpRing && c.next < oldest-cmpRing {
		c.next = oldest - cmpRing
	}
	for ; c.next < common; c.next++ {
		c.record(a.ring[c.next%cmpRing] == b.ring[c.next%cmpRing], &compared, &agreed)
	}
	if a.off == b.off && a.off%cmpBlock != 0 {
		c.record(a.cur == b.cur, &compared, &agreed)
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
	} else {
		c.mismatch = true
	}
	c.compared, c.lastOK = true, ok
}

// diverged reports whether the streams disagree at the most recent offsets
// compared: a failover would splice two different replies.
func (c *comparer) diverged() bool { return c != nil && c.compared && !c.lastOK }

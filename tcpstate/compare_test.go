package tcpstate

import (
	"bytes"
	"math/rand"
	"testing"
)

// feedAll delivers a stream to leg i in segments of the given size.
func feedAll(c *comparer, i uint8, data []byte, seg int) {
	for off := 0; off < len(data); off += seg {
		c.feed(i, uint32(off), data[off:min(off+seg, len(data))])
	}
}

func TestComparer(t *testing.T) {
	rnd := rand.New(rand.NewSource(1))
	body := make([]byte, 40000)
	rnd.Read(body)
	sub := func(at int, s string) []byte {
		b := append([]byte(nil), body...)
		copy(b[at:], s)
		return b
	}
	shifted := append([]byte("x"), body...)
	cases := []struct {
		name     string
		a, b     []byte
		segA     int
		segB     int
		diverged bool
	}{
		{"equal", body, body, 1448, 1000, false},
		{"equal, far apart sizes", body, body, 7, 1448, false},
		{"date in a small reply", sub(40, "Date: 21"), body, 1448, 1448, false},
		{"date near the end", sub(len(body)-100, "99"), body, 1448, 1448, false},
		{"difference in the last bytes", sub(len(body)-3, "zz"), body, 1448, 1448, true},
		{"shifted", shifted[:len(body)], body, 1448, 1448, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, order := range []string{"a first", "b first", "interleaved"} {
				var c comparer
				switch order {
				case "a first":
					feedAll(&c, 0, tc.a, tc.segA)
					feedAll(&c, 1, tc.b, tc.segB)
				case "b first":
					feedAll(&c, 1, tc.b, tc.segB)
					feedAll(&c, 0, tc.a, tc.segA)
				default:
					for off := 0; off < len(body); off += 500 {
						end := min(off+500, len(body))
						c.feed(0, uint32(off), tc.a[off:end])
						c.feed(1, uint32(off), tc.b[off:end])
					}
				}
				if c.diverged() != tc.diverged || !c.compared {
					t.Errorf("%s: diverged %v, want %v (compared %v)", order, c.diverged(), tc.diverged, c.compared)
				}
			}
		})
	}
}

// TestComparerSmallReplyDate: a 330-byte reply whose Date differs, both legs
// at the same offset, must not count as diverged.
func TestComparerSmallReplyDate(t *testing.T) {
	a := []byte("HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Wed, 25 Nov 2026 21:13:33 GMT\r\n" + string(bytes.Repeat([]byte("h"), 260)))
	b := bytes.Replace(a, []byte("21:13:33"), []byte("21:13:34"), 1)
	var c comparer
	c.feed(0, 0, a)
	c.feed(1, 0, b)
	if c.diverged() || c.recovered != 1 {
		t.Fatalf("diverged %v, recovered %d", c.diverged(), c.recovered)
	}
}

func TestComparerOutOfOrder(t *testing.T) {
	data := bytes.Repeat([]byte("abcdefgh"), 1000)
	var c comparer
	c.feed(0, 0, data)
	c.feed(1, 4000, data[4000:]) // a gap: skipped
	if c.compared {
		t.Fatal("compared across a gap")
	}
	c.feed(1, 0, data[:4000])
	c.feed(1, 4000, data[4000:])
	if !c.compared || c.diverged() {
		t.Fatal("not compared after the gap filled")
	}
}

// BenchmarkStreamSum: the per-segment cost of hashing one leg's reply bytes.
func BenchmarkStreamSum(b *testing.B) {
	data := make([]byte, 1448)
	for i := range data {
		data[i] = byte(i * 7)
	}
	var s streamSum
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		s.add(data)
	}
}

// TestBlockSum: a block's sum changes with any one of its sub-blocks and
// with their order, so blocks that agree in every sub-block but one, or
// hold the same sub-blocks in another order, are told apart.
func TestBlockSum(t *testing.T) {
	var base [cmpSubs]uint32
	for j := range base {
		base[j] = uint32(j) * 0x01000193
	}
	sum := blockSum(&base)
	cases := []struct {
		name   string
		change func(s *[cmpSubs]uint32)
	}{
		{"first sub-block", func(s *[cmpSubs]uint32) { s[0] ^= 1 }},
		{"middle sub-block", func(s *[cmpSubs]uint32) { s[cmpSubs/2] ^= 0x80000000 }},
		{"last sub-block", func(s *[cmpSubs]uint32) { s[cmpSubs-1]++ }},
		{"two sub-blocks swapped", func(s *[cmpSubs]uint32) { s[1], s[2] = s[2], s[1] }},
		{"same change in two sub-blocks", func(s *[cmpSubs]uint32) { s[3] ^= 0xff; s[4] ^= 0xff }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := base
			tc.change(&s)
			if blockSum(&s) == sum {
				t.Fatalf("sum %#x unchanged", sum)
			}
		})
	}
	if again := base; blockSum(&again) != sum {
		t.Fatal("the same sub-blocks gave another sum")
	}
}

// TestStreamSumSplits: a stream's sums do not depend on where its segments
// end, aligned to words or not.
func TestStreamSumSplits(t *testing.T) {
	rnd := rand.New(rand.NewSource(2))
	data := make([]byte, 5*cmpBlock+37)
	rnd.Read(data)
	var whole streamSum
	whole.add(data)
	for _, cuts := range []struct {
		name string
		next func() int
	}{
		{"1448", func() int { return 1448 }},
		{"7", func() int { return 7 }},
		{"random 1..100", func() int { return 1 + rnd.Intn(100) }},
		{"random 1..3000", func() int { return 1 + rnd.Intn(3000) }},
	} {
		t.Run(cuts.name, func(t *testing.T) {
			var s streamSum
			for off := 0; off < len(data); {
				n := min(cuts.next(), len(data)-off)
				s.add(data[off : off+n])
				off += n
			}
			if s != whole {
				t.Fatalf("sums differ from the stream's added whole")
			}
		})
	}
}

// TestStreamSumDetectsOneByte: a change to any one byte of a sub-block
// changes that sub-block's sum, at every position, in text and in binary
// content whose words have an all-zero or all-one half (a sum without keys
// would multiply the change by that zero half).
func TestStreamSumDetectsOneByte(t *testing.T) {
	halves := func(lo, hi byte) []byte {
		b := make([]byte, cmpBlock)
		for i := range b {
			b[i] = lo + byte(i%4)
			if i%8 >= 4 {
				b[i] = hi
			}
		}
		return b
	}
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"text", bytes.Repeat([]byte("0123456789abcdef"), cmpBlock/16)},
		{"zero high halves", halves(1, 0)},
		{"zero low halves", func() []byte {
			b := halves(0, 7)
			for i := range b {
				if i%8 < 4 {
					b[i] = 0
				}
			}
			return b
		}()},
		{"all-one high halves", halves(1, 0xff)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var base streamSum
			base.add(tc.data)
			for i := range cmpBlock {
				for _, flip := range []byte{0x01, 0x80, 0xff} {
					d := append([]byte(nil), tc.data...)
					d[i] ^= flip
					var s streamSum
					s.add(d)
					j := uint64(i / cmpSub)
					x, _ := s.subAt(0, j)
					y, _ := base.subAt(0, j)
					if x == y {
						t.Fatalf("byte %d ^ %#x: sub-block %d's sum unchanged", i, flip, j)
					}
				}
			}
		})
	}
}

// TestNHGolden pins the keys: a changed key table would compare streams
// differently from a gateway built before it, and the other tests pass
// with many key tables.
func TestNHGolden(t *testing.T) {
	got := [3]uint64{nh(0, 0), nh(0x0102030405060708, 3), nh(^uint64(0), 7)}
	want := [3]uint64{0x4eab8e1bcffc982d, 0x5a9035bca1d0fcd4, 0x28913f0b541467d6} // computed apart from the code
	if got != want {
		t.Errorf("nh = %#x, want %#x", got, want)
	}
}

// TestStreamSumDetectsTwoWords: changes spread over two words of a
// sub-block, which a sum of words times keys lets cancel (the top bit of
// two words flipped always did; an ASCII digit changed at the same byte of
// two words did once in about 300), change the sub-block's sum.
func TestStreamSumDetectsTwoWords(t *testing.T) {
	rnd := rand.New(rand.NewSource(3))
	cases := []struct {
		name   string
		change func(d []byte, a, b int)
	}{
		{"top bit of two words", func(d []byte, a, b int) { d[a*8+7] ^= 0x80; d[b*8+7] ^= 0x80 }},
		{"a digit at byte 7 of two words", func(d []byte, a, b int) {
			d[a*8+7] = '0' + byte(rnd.Intn(10))
			d[b*8+7] = '0' + byte(rnd.Intn(10))
		}},
		{"two words swapped", func(d []byte, a, b int) {
			var w [cmpWord]byte
			copy(w[:], d[a*8:a*8+8])
			copy(d[a*8:a*8+8], d[b*8:b*8+8])
			copy(d[b*8:b*8+8], w[:])
		}},
		{"random bytes in two words", func(d []byte, a, b int) {
			d[a*8+rnd.Intn(8)] ^= byte(1 + rnd.Intn(255))
			d[b*8+rnd.Intn(8)] ^= byte(1 + rnd.Intn(255))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			missed := 0
			const trials = 20000
			for range trials {
				base := make([]byte, cmpSub)
				for i := range base {
					base[i] = '0' + byte(rnd.Intn(10))
				}
				a := rnd.Intn(cmpSub / cmpWord)
				b := (a + 1 + rnd.Intn(cmpSub/cmpWord-1)) % (cmpSub / cmpWord)
				d := append([]byte(nil), base...)
				tc.change(d, a, b)
				if bytes.Equal(d, base) {
					continue
				}
				var x, y streamSum
				x.add(base)
				y.add(d)
				if sx, _ := x.subAt(0, 0); sx == func() uint32 { s, _ := y.subAt(0, 0); return s }() {
					missed++
				}
			}
			if missed > 0 {
				t.Errorf("%d of %d changes left the sub-block's sum unchanged", missed, trials)
			}
		})
	}
}

// TestComparisonPastFourGiB: a reply stream's offsets pass 4 GiB in a large
// download or on a long keep-alive connection. Past that point the
// comparison goes on as it does below it: the same segments, fed to legs
// that stand at 60 KiB or at 4 GiB less 4 KiB, are compared the same way and
// given the same verdict — agreeing, telling a shifted reply, comparing a
// lagging leg by whole blocks, skipping an acknowledged gap.
func TestComparisonPastFourGiB(t *testing.T) {
	const chunk = 64 << 10
	fill := make([]byte, chunk)
	rand.New(rand.NewSource(7)).Read(fill)
	// prefix feeds both legs the same n bytes.
	prefix := func(n uint32) comparer {
		var c comparer
		for off := uint32(0); off != n; {
			k := min(uint32(chunk), n-off)
			c.feed(0, off, fill[:k])
			c.feed(1, off, fill[:k])
			off += k
		}
		return c
	}
	low, high := uint32(60<<10), uint32(1<<32-4<<10) // high crosses 4 GiB 4 KiB on
	bases := map[uint32]comparer{low: prefix(low), high: prefix(high)}
	for at, c := range bases {
		if c.diverged() || !c.compared {
			t.Fatalf("the first %d bytes: compared %v, diverged %v", at, c.compared, c.diverged())
		}
	}
	tail := make([]byte, 16<<10)
	rand.New(rand.NewSource(8)).Read(tail)
	shifted := append(append(append([]byte(nil), tail[:5000]...), '!'), tail[5000:len(tail)-1]...)
	type seg struct {
		leg      uint8
		from, to int    // of the leg's reply after the prefix
		acked    uint32 // nonzero: the leg was acknowledged up to here (resync)
	}
	// alternate gives both legs the reply in turns of 1 KiB.
	alternate := func() []seg {
		var ss []seg
		for o := 0; o < len(tail); o += 1024 {
			ss = append(ss, seg{0, o, o + 1024, 0}, seg{1, o, o + 1024, 0})
		}
		return ss
	}
	cases := []struct {
		name         string
		backup       []byte // leg 1's reply
		segs         []seg
		wantDiverged bool
		wantResyncs  int
	}{
		{"equal replies", tail, alternate(), false, 0},
		{"a reply shifted past 4 GiB", shifted, alternate(), true, 0},
		{"a lagging leg, by whole blocks", tail, []seg{{0, 0, 16384, 0}, {1, 0, 16384, 0}}, false, 0},
		{"a lagging leg, shifted", shifted, []seg{{0, 0, 16384, 0}, {1, 0, 16384, 0}}, true, 0},
		// Leg 1 lost [2048, 6144) on its way, acknowledged past it.
		{"an acknowledged gap", tail, []seg{{0, 0, 16384, 0}, {1, 0, 2048, 0}, {1, 6144, 16384, 7000}}, false, 1},
		// Acknowledged only into the gap: the rest of it may still come,
		// so hashing waits at the block boundary past acked (5120), and the
		// comparison goes on once the rest is resent.
		{"a gap acknowledged in part", tail, []seg{{0, 0, 16384, 0}, {1, 0, 2048, 0}, {1, 6144, 16384, 5000}, {1, 5120, 16384, 0}}, false, 1},
		{"a gap acknowledged in part, shifted", shifted, []seg{{0, 0, 16384, 0}, {1, 0, 2048, 0}, {1, 6144, 16384, 5000}, {1, 5120, 16384, 0}}, true, 1},
	}
	// A takeover by leg 1 is judged at the offset the client holds
	// (divergedAt): these splices lie before, at and after its reply.
	splices := []uint32{0, 2048, 8192, 16384, 20000}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			type result struct {
				compared, agreed, resyncs int
				diverged                  bool
				divergedAt                [5]bool // at each of splices
			}
			run := func(at uint32) (r result) {
				c := bases[at]
				for _, s := range tc.segs {
					data := tail
					if s.leg == 1 {
						data = tc.backup
					}
					off := at + uint32(s.from)
					if s.acked != 0 && c.ahead(s.leg, off) && c.resync(s.leg, off, at+s.acked) {
						r.resyncs++
					}
					n, ok := c.feed(s.leg, off, data[s.from:s.to])
					r.compared += n
					r.agreed += ok
				}
				r.diverged = c.diverged()
				for k, sp := range splices {
					r.divergedAt[k] = c.divergedAt(1, at+sp)
				}
				return r
			}
			below, past := run(low), run(high)
			if below.compared == 0 || below.diverged != tc.wantDiverged || below.resyncs != tc.wantResyncs ||
				below.divergedAt[0] != tc.wantDiverged || below.divergedAt[len(splices)-1] {
				t.Fatalf("below 4 GiB: %+v; the case needs comparisons, diverged %v (at the first splice too, not past leg 1's reply) and %d resyncs",
					below, tc.wantDiverged, tc.wantResyncs)
			}
			if past != below {
				t.Errorf("across 4 GiB: %+v; below it: %+v", past, below)
			}
		})
	}
}

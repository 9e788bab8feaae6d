package rewrite

import (
	"math/rand/v2"
	"testing"
)

func TestChecksumMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 4096)
	check := func(b []byte, init uint32) {
		t.Helper()
		if got, want := Checksum(b, init), refChecksum(b, init); got != want {
			t.Fatalf("Checksum(len %d, init %#x) = %#x, reference %#x", len(b), init, got, want)
		}
	}
	for range 20000 {
		n := rng.IntN(300)
		if rng.IntN(10) == 0 {
			n = rng.IntN(len(buf))
		}
		off := rng.IntN(8) // unaligned starts too
		b := buf[off : off+min(n, len(buf)-off)]
		switch rng.IntN(4) {
		case 0:
			for i := range b {
				b[i] = 0xff // maximal carries
			}
		case 1:
			clear(b)
		default:
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
		}
		var init uint32
		switch rng.IntN(3) {
		case 1:
			init = rng.Uint32() & 0xffff
		case 2:
			init = rng.Uint32()
		}
		check(b, init)
	}
	for n := range 70 { // every tail shape around the unrolled loop
		b := buf[:n]
		for i := range b {
			b[i] = byte(0xf0 + i)
		}
		check(b, 0)
		check(b, 0xffffffff)
	}
}

func TestChecksumKnownValue(t *testing.T) {
	// RFC 1071 section 3 example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
	if got := Checksum([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, 0); got != 0xddf2 {
		t.Fatalf("got %#x, want 0xddf2", got)
	}
}

// TestCsumAdjust checks the RFC 1624 update against a full recomputation
// for random word changes, including to and from 0x0000 and 0xffff.
func TestCsumAdjust(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	words := []uint16{0, 0xffff, 1, 0xfffe, 0x8000}
	pick := func() uint16 {
		if rng.IntN(3) == 0 {
			return words[rng.IntN(len(words))]
		}
		return uint16(rng.Uint32())
	}
	b := make([]byte, 40)
	for range 20000 {
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		b[10], b[11] = 0, 0
		hc := ^uint16(refChecksum(b, 0))
		b[10], b[11] = byte(hc>>8), byte(hc)
		i := 2 * rng.IntN(20)
		if i == 10 {
			continue
		}
		old := uint16(b[i])<<8 | uint16(b[i+1])
		nw := pick()
		b[i], b[i+1] = byte(nw>>8), byte(nw)
		hc = csumAdjust(hc, old, nw)
		b[10], b[11] = byte(hc>>8), byte(hc)
		if refChecksum(b, 0) != 0xffff {
			t.Fatalf("adjust %#x->%#x: checksum %#x invalid", old, nw, hc)
		}
	}
}

func BenchmarkChecksum1500(b *testing.B) {
	buf := make([]byte, 1500)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		Checksum(buf, 0)
	}
}

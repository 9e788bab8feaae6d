package rewrite

// Seq is a TCP sequence number. Sequence space wraps at 2^32, so values are
// compared by their signed distance, never with < on the raw numbers.
type Seq uint32

// Add returns s advanced by n bytes.
func (s Seq) Add(n uint32) Seq { return s + Seq(n) }

// Sub returns the signed distance s - o.
func (s Seq) Sub(o Seq) int32 { return int32(s - o) }

// LessThan reports whether s comes before o.
func (s Seq) LessThan(o Seq) bool { return int32(s-o) < 0 }

// LessEq reports whether s comes before o or equals it.
func (s Seq) LessEq(o Seq) bool { return int32(s-o) <= 0 }

// InWindow reports whether s lies in [first, first+size).
func (s Seq) InWindow(first Seq, size uint32) bool { return uint32(s-first) < size }

// SeqMax returns the later of a and b.
func SeqMax(a, b Seq) Seq {
	if a.LessThan(b) {
		return b
	}
	return a
}

// SeqMin returns the earlier of a and b.
func SeqMin(a, b Seq) Seq {
	if a.LessThan(b) {
		return a
	}
	return b
}

// TSLess compares TCP timestamp values, which wrap like sequence numbers.
func TSLess(a, b uint32) bool { return int32(a-b) < 0 }

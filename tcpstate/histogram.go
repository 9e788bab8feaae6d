package tcpstate

import "time"

// LatencyBounds are the upper bounds of the latency histograms' buckets:
// from a millisecond (a stall set by detection at 10ms probes) to seconds (a
// stall set by a retransmission timeout).
var LatencyBounds = [...]time.Duration{
	time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond,
	20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond,
	500 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second,
}

// Histogram counts durations into LatencyBounds' buckets. Observing
// allocates nothing, so it may sit on the per-segment path.
type Histogram struct {
	Counts [len(LatencyBounds)]uint64 // per bucket, not cumulative; above the last bound only in Count
	Count  uint64
	Sum    time.Duration
}

// Observe adds one duration.
func (h *Histogram) Observe(d time.Duration) {
	h.Count++
	h.Sum += d
	for i, b := range LatencyBounds {
		if d <= b {
			h.Counts[i]++
			return
		}
	}
}

// Cumulative returns, per bound, how many durations were at most it.
func (h *Histogram) Cumulative() []uint64 {
	out := make([]uint64, len(h.Counts))
	var n uint64
	for i, c := range h.Counts {
		n += c
		out[i] = n
	}
	return out
}

package tcpstate

import (
	"slices"
	"testing"
	"time"
)

func TestHistogram(t *testing.T) {
	cases := []struct {
		name    string
		obs     []time.Duration
		wantCum []uint64 // first five bounds: 1, 2, 5, 10, 20 ms
		count   uint64
		sum     time.Duration
	}{
		{"empty", nil, []uint64{0, 0, 0, 0, 0}, 0, 0},
		{"on a bound", []time.Duration{time.Millisecond, 2 * time.Millisecond}, []uint64{1, 2, 2, 2, 2}, 2, 3 * time.Millisecond},
		{"between", []time.Duration{1500 * time.Microsecond, 7 * time.Millisecond, 19 * time.Millisecond}, []uint64{0, 1, 1, 2, 3}, 3, 27500 * time.Microsecond},
		{"beyond the last bound counts only in Count", []time.Duration{time.Minute}, []uint64{0, 0, 0, 0, 0}, 1, time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var h Histogram
			for _, d := range tc.obs {
				h.Observe(d)
			}
			cum := h.Cumulative()
			if !slices.Equal(cum[:5], tc.wantCum) || h.Count != tc.count || h.Sum != tc.sum {
				t.Fatalf("cumulative %v count %d sum %v; want %v %d %v", cum[:5], h.Count, h.Sum, tc.wantCum, tc.count, tc.sum)
			}
			if last := cum[len(cum)-1]; last > h.Count {
				t.Fatalf("last bucket %d above count %d", last, h.Count)
			}
		})
	}
	var h Histogram
	if n := testing.AllocsPerRun(100, func() { h.Observe(3 * time.Millisecond) }); n != 0 {
		t.Fatalf("Observe allocates %v times", n)
	}
}

package datapath

import "testing"

// fakeRing reports a running drop total, as capture.Ring.Stats does.
type fakeRing struct{ drops uint64 }

func (r *fakeRing) Stats() (uint64, uint64, error) { return 0, r.drops, nil }

// TestRingDropsNotRecounted: reading the status again and again reports the
// same drops, not their total once more on every read.
func TestRingDropsNotRecounted(t *testing.T) {
	a, b := &fakeRing{drops: 5}, &fakeRing{drops: 2}
	rings := []ringStats{a, b}
	for read := 0; read < 3; read++ {
		if got := sumRingDrops(rings); got != 7 {
			t.Fatalf("read %d: %d ring drops, want 7", read, got)
		}
	}
	a.drops += 4
	if got := sumRingDrops(rings); got != 11 {
		t.Fatalf("after 4 more drops: %d, want 11", got)
	}
}

package capture

import "testing"

// Lookup's hot path without a kernel: a hand-built snapshot.
func TestLookupAllocs(t *testing.T) {
	n := &Neighbors{missCh: make(chan [4]byte, 1)}
	hop := [4]byte{10, 0, 0, 1}
	mac := [6]byte{2, 0, 0, 0, 0, 1}
	n.snap.Store(&neighSnap{
		routes: newCowMap(map[[4]byte]*routeEntry{{192, 0, 2, 1}: {hop: hop}, hop: {hop: hop}}),
		hops:   newCowMap(map[[4]byte]*hopEntry{hop: {mac: mac}}),
	})
	if got, ok := n.Lookup([4]byte{192, 0, 2, 1}); !ok || got != mac {
		t.Fatalf("Lookup = %x, %v", got, ok)
	}
	if !n.snap.Load().routes.get([4]byte{192, 0, 2, 1}).used.Load() || !n.snap.Load().hops.get(hop).used.Load() {
		t.Error("Lookup did not mark the entries used")
	}
	if a := testing.AllocsPerRun(1000, func() { n.Lookup([4]byte{192, 0, 2, 1}) }); a != 0 {
		t.Errorf("hit: %v allocs/op", a)
	}
	if a := testing.AllocsPerRun(1000, func() { n.Lookup([4]byte{192, 0, 2, 2}) }); a != 0 {
		t.Errorf("miss: %v allocs/op", a)
	}
	if got := <-n.missCh; got != [4]byte{192, 0, 2, 2} {
		t.Errorf("miss queued %v", got)
	}
}

package capture

import (
	"runtime"
	"testing"
)

// Lookup's hot path without a kernel: a hand-built snapshot.
func TestLookupAllocs(t *testing.T) {
	n := &Neighbors{missCh: make(chan [4]byte, 1)}
	hop := [4]byte{10, 0, 0, 1}
	mac := [6]byte{2, 0, 0, 0, 0, 1}
	n.snap.Store(&neighSnap{
		routes: map[[4]byte]*routeEntry{{192, 0, 2, 1}: {hop: hop}, hop: {hop: hop}},
		hops:   map[[4]byte]*hopEntry{hop: {mac: mac}},
	})
	if got, ok := n.Lookup([4]byte{192, 0, 2, 1}); !ok || got != mac {
		t.Fatalf("Lookup = %x, %v", got, ok)
	}
	if !n.snap.Load().route([4]byte{192, 0, 2, 1}).used.Load() || !n.snap.Load().hops[hop].used.Load() {
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

// TestWithRoute: destinations learned one at a time are all found with
// their latest next hop, whether they sit in the recent overlay or in the
// rebuilt map, and learning n of them allocates about n√n entries' worth,
// not n² (400 KB per destination at 20000 when each copied the map).
func TestWithRoute(t *testing.T) {
	tests := []struct {
		name string
		n    int
	}{{"few", 10}, {"one rebuild", 300}, {"many", 20000}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &neighSnap{routes: map[[4]byte]*routeEntry{}}
			dst := func(i int) [4]byte { return [4]byte{198, 18, byte(i >> 8), byte(i)} }
			hopOf := func(i, gen int) [4]byte { return [4]byte{10, 0, byte(gen), byte(i % 7)} }
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			for i := range tc.n {
				s = s.withRoute(dst(i), &routeEntry{hop: hopOf(i, 0)})
				if len(s.recent) > recentMax(len(s.routes)) {
					t.Fatalf("after %d: recent holds %d, more than %d", i+1, len(s.recent), recentMax(len(s.routes)))
				}
			}
			runtime.ReadMemStats(&after)
			perDst := (after.TotalAlloc - before.TotalAlloc) / uint64(tc.n)
			// A changed next hop, for one in the rebuilt map and the last
			// one learned (in recent when there is one).
			for _, i := range []int{0, tc.n - 1} {
				s = s.withRoute(dst(i), &routeEntry{hop: hopOf(i, 1)})
			}
			if s.numRoutes() != tc.n {
				t.Fatalf("%d routes, want %d", s.numRoutes(), tc.n)
			}
			for i := range tc.n {
				want := hopOf(i, 0)
				if i == 0 || i == tc.n-1 {
					want = hopOf(i, 1)
				}
				if r := s.route(dst(i)); r == nil || r.hop != want {
					t.Fatalf("route to %v: %+v, want hop %v", dst(i), r, want)
				}
			}
			seen := 0
			s.eachRoute(func([4]byte, *routeEntry) { seen++ })
			if seen != tc.n {
				t.Fatalf("eachRoute saw %d, want %d", seen, tc.n)
			}
			if perDst > 32<<10 {
				t.Fatalf("learning %d destinations allocated %d bytes each", tc.n, perDst)
			}
			t.Logf("%d destinations: %d bytes allocated each", tc.n, perDst)
		})
	}
}

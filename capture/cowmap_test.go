package capture

import (
	"runtime"
	"testing"
)

// TestCowMap: keys set, changed and deleted one version at a time are all
// found with their latest value, whether the change sits in the overlay or
// in a rebuilt base; older versions are untouched; and setting n keys one at
// a time allocates about n√n entries' worth, not n² (315 KB per key at
// 20000 when each version copied the whole map).
func TestCowMap(t *testing.T) {
	key := func(i int) [4]byte { return [4]byte{198, 18, byte(i >> 8), byte(i)} }
	tests := []struct {
		name string
		n    int
	}{{"few", 10}, {"one rebuild", 300}, {"many", 20000}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newCowMap[int](nil)
			vals := make([]int, tc.n)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			for i := range tc.n {
				vals[i] = i
				m = m.with(key(i), &vals[i])
				if len(m.recent) > overlayMax(len(m.base)) {
					t.Fatalf("after %d: overlay holds %d, more than %d", i+1, len(m.recent), overlayMax(len(m.base)))
				}
			}
			runtime.ReadMemStats(&after)
			perKey := (after.TotalAlloc - before.TotalAlloc) / uint64(tc.n)
			old := m
			// Change the first and delete every third: some sit in the
			// base, the last ones in the overlay.
			changed := -1
			m = m.with(key(0), &changed)
			deleted := map[int]bool{}
			for i := 1; i < tc.n; i += 3 {
				m = m.with(key(i), nil)
				deleted[i] = true
			}
			m = m.with(key(tc.n+5), nil) // deleting what is absent changes nothing
			if want := tc.n - len(deleted); m.len() != want {
				t.Fatalf("len %d, want %d", m.len(), want)
			}
			seen := 0
			m.each(func(k [4]byte, v *int) {
				seen++
				if v == nil {
					t.Fatalf("each gave %v a nil value", k)
				}
			})
			if seen != m.len() {
				t.Fatalf("each saw %d, want %d", seen, m.len())
			}
			for i := range tc.n {
				v := m.get(key(i))
				switch {
				case i == 0 && (v == nil || *v != -1):
					t.Fatalf("key 0: %v, want the changed value", v)
				case deleted[i] && v != nil:
					t.Fatalf("key %d: %d after its deletion", i, *v)
				case i != 0 && !deleted[i] && (v == nil || *v != i):
					t.Fatalf("key %d: %v, want %d", i, v, i)
				}
				if v := old.get(key(i)); v == nil || *v != i {
					t.Fatalf("the older version's key %d: %v, want %d", i, v, i)
				}
			}
			if old.len() != tc.n {
				t.Fatalf("the older version's len %d, want %d", old.len(), tc.n)
			}
			if perKey > 32<<10 {
				t.Fatalf("setting %d keys allocated %d bytes each", tc.n, perKey)
			}
			t.Logf("%d keys: %d bytes allocated each", tc.n, perKey)
		})
	}
}

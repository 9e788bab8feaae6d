package capture

// cowMap is an immutable map from IPv4 addresses that is cheap to change:
// a version with one key changed copies only the overlay of changes since
// the base map was last built, and the base is rebuilt, changes folded in,
// once the overlay outgrows about the square root of its size. Changing n
// keys one at a time so copies O(n√n) entries in all, where copying the
// whole map for each cost O(n²): the neighbour cache learns every new
// client (and a spoofed-SYN flood's every source) this way, and publishes
// each version to the datapath's lock-free lookups.
type cowMap[V any] struct {
	base   map[[4]byte]*V
	recent map[[4]byte]*V // changes since base was built; nil deletes
	n      int            // keys with a value
}

// get is k's value, nil if none.
func (m *cowMap[V]) get(k [4]byte) *V {
	if v, ok := m.recent[k]; ok {
		return v
	}
	return m.base[k]
}

// len is the number of keys with a value.
func (m *cowMap[V]) len() int { return m.n }

// with is a version of m with k's value set to v, or deleted when v is nil.
func (m *cowMap[V]) with(k [4]byte, v *V) *cowMap[V] {
	had, has := m.get(k) != nil, v != nil
	n := m.n
	switch {
	case had && !has:
		n--
	case !had && has:
		n++
	case !had && !has:
		return m
	}
	if len(m.recent) < overlayMax(len(m.base)) {
		recent := make(map[[4]byte]*V, len(m.recent)+1)
		for rk, rv := range m.recent {
			recent[rk] = rv
		}
		recent[k] = v
		return &cowMap[V]{base: m.base, recent: recent, n: n}
	}
	base := make(map[[4]byte]*V, n)
	m.each(func(bk [4]byte, bv *V) { base[bk] = bv })
	if has {
		base[k] = v
	} else {
		delete(base, k)
	}
	return &cowMap[V]{base: base, n: n}
}

// each calls fn for every key with a value.
func (m *cowMap[V]) each(fn func([4]byte, *V)) {
	for k, v := range m.base {
		if _, changed := m.recent[k]; !changed {
			fn(k, v)
		}
	}
	for k, v := range m.recent {
		if v != nil {
			fn(k, v)
		}
	}
}

// newCowMap makes a map holding m's entries (m is not kept).
func newCowMap[V any](m map[[4]byte]*V) *cowMap[V] {
	base := make(map[[4]byte]*V, len(m))
	for k, v := range m {
		if v != nil {
			base[k] = v
		}
	}
	return &cowMap[V]{base: base, n: len(base)}
}

// overlayMax bounds the overlay of a map of n keys: about √n, at least 128.
func overlayMax(n int) int {
	m := 128
	for m*m < n {
		m *= 2
	}
	return m
}

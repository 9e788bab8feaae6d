package tcpstate

import "testing"

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

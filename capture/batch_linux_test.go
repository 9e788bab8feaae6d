package capture

import (
	"testing"
	"time"
)

func TestBatch(t *testing.T) {
	inNetns(t, func(t *testing.T, tn testNet) {
		r := openRing(t, tn.IfA, testVIP, 80, RingConfig{FrameCount: 512})
		s := openSenderIn(t, tn.NSB, tn.IfB)
		const size = 8
		var reported, refused int
		b := s.NewBatch(size, 1600, func(frame []byte, err error) {
			reported++
			if err != nil {
				refused++
			}
		})
		var want [][]byte
		failed := 0
		for i := 0; i < 20; i++ {
			f := buildFrame(t, frameSpec{src: tn.IPB, dst: testVIP, sport: uint16(1000 + i), dport: 80, payload: 100})
			if i == 5 {
				// Over the MTU: the kernel refuses it, the rest still go.
				big := make([]byte, 14+1500+1)
				copy(big, f[:14])
				failed += b.Add(big)
			}
			failed += b.Add(f)
			want = append(want, f)
			if b.Len() > size {
				t.Fatalf("batch holds %d frames, size %d", b.Len(), size)
			}
		}
		failed += b.Add(make([]byte, 2000)) // larger than the batch's frames
		failed += b.Flush()
		if failed != 2 || refused != 2 || reported != 22 {
			t.Errorf("%d frames failed, %d of %d reported refused; want 2 (one over the MTU, one over the batch's frame size) of 22", failed, refused, reported)
		}
		if err := Wait([]*Ring{r}, time.Second); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		var got int
		for {
			fr, ok := r.Next()
			if !ok {
				break
			}
			if got < len(want) && string(fr.Data) != string(want[got]) {
				t.Errorf("frame %d differs from the one sent", got)
			}
			got++
		}
		if got != len(want) {
			t.Errorf("got %d frames, want %d", got, len(want))
		}
		f := buildFrame(t, frameSpec{src: tn.IPB, dst: testVIP, sport: 1, dport: 80})
		if a := testing.AllocsPerRun(100, func() {
			b.Add(f)
			if b.Len() == size {
				b.Flush()
			}
		}); a != 0 {
			t.Errorf("Batch.Add and Flush: %v allocs/op", a)
		}
	})
}

func TestSpin(t *testing.T) {
	inNetns(t, func(t *testing.T, tn testNet) {
		r := openRing(t, tn.IfA, testVIP, 80, RingConfig{})
		s := openSenderIn(t, tn.NSB, tn.IfB)
		start := time.Now()
		if Spin([]*Ring{r}, 2*time.Millisecond) {
			t.Fatal("Spin found a frame on an idle ring")
		}
		if d := time.Since(start); d < 2*time.Millisecond {
			t.Errorf("Spin gave up after %v, want 2ms", d)
		}
		send(t, s, buildFrame(t, frameSpec{src: tn.IPB, dst: testVIP, sport: 1, dport: 80}))
		if !Spin([]*Ring{r}, time.Second) {
			t.Fatal("Spin missed a frame")
		}
		if _, ok := r.Next(); !ok {
			t.Fatal("Spin reported a frame Next does not return")
		}
	})
}

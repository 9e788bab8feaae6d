package capture

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

// TestBatchWaitsForBuffer: a batch that fills the socket's send buffer
// waits for room instead of failing frames (the fast send never blocks).
// A slow tbf queue on the sending side holds the frames, and so the buffer.
func TestBatchWaitsForBuffer(t *testing.T) {
	inNetns(t, func(t *testing.T, tn testNet) {
		run(t, "tc", "-n", tn.NSB, "qdisc", "add", "dev", tn.IfB, "root", "tbf", "rate", "2mbit", "burst", "4000", "limit", "1000000")
		const frames = 60
		r := openRing(t, tn.IfA, testVIP, 80, RingConfig{FrameCount: 2 * frames})
		s := openSenderIn(t, tn.NSB, tn.IfB)
		if err := unix.SetsockoptInt(s.Fd(), unix.SOL_SOCKET, unix.SO_SNDBUF, 4096); err != nil {
			t.Fatal(err)
		}
		var refused []error
		b := s.NewBatch(16, 1600, func(frame []byte, err error) {
			if err != nil {
				refused = append(refused, err)
			}
		})
		failed := 0
		for i := range frames {
			failed += b.Add(buildFrame(t, frameSpec{src: tn.IPB, dst: testVIP, sport: uint16(1000 + i), dport: 80, payload: 1000}))
		}
		failed += b.Flush()
		if failed != 0 || len(refused) != 0 {
			t.Fatalf("%d of %d frames failed (the first: %v), want every one sent after waiting for room", failed, frames, refused[0])
		}
		if s.BufferWaits() == 0 {
			t.Error("no send waited for room: the test's queue did not fill the socket's buffer")
		}
		got := len(waitFrames(t, r, frames, 5*time.Second, 20*time.Millisecond))
		if got != frames {
			t.Errorf("%d frames arrived, want %d", got, frames)
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

func TestPipe(t *testing.T) {
	inNetns(t, func(t *testing.T, tn testNet) {
		r := openRing(t, tn.IfA, testVIP, 80, RingConfig{FrameCount: 1024})
		s := openSenderIn(t, tn.NSB, tn.IfB)
		var reported []uint16 // source ports, in the order frames were reported
		refused := 0
		p := s.NewPipe(3, 8, 1600, 2, func(frame []byte, err error) {
			if err != nil {
				refused++
				return
			}
			reported = append(reported, uint16(frame[34])<<8|uint16(frame[35]))
		})
		frame := func(port int) []byte {
			return buildFrame(t, frameSpec{src: tn.IPB, dst: testVIP, sport: uint16(port), dport: 80, payload: 100})
		}
		// A short batch with nothing in flight goes out at once, reported
		// before Send returns.
		p.Add(frame(1000))
		p.Send()
		if len(reported) != 1 {
			t.Fatalf("inline send: %d frames reported, want 1", len(reported))
		}
		// A stream larger than every batch together is handed over in
		// order, waiting for batches to come back when all are in flight.
		const n = 300
		for i := 1; i < n; i++ {
			if i == 100 {
				big := make([]byte, 14+1500+1) // over the MTU: refused by the kernel
				copy(big, frame(1)[:14])
				p.Add(big)
				p.Add(make([]byte, 2000)) // over the pipe's frame size
			}
			p.Add(frame(1000 + i))
			if i%20 == 0 {
				p.Send()
			}
		}
		p.Wait()
		if refused != 2 || len(reported) != n {
			t.Fatalf("%d frames reported sent and %d refused, want %d and 2", len(reported), refused, n)
		}
		for i, port := range reported {
			if port != uint16(1000+i) {
				t.Fatalf("frame %d reported with port %d: out of order", i, port)
			}
		}
		got := 0
		deadline := time.Now().Add(2 * time.Second)
		for got < n && time.Now().Before(deadline) {
			fr, ok := r.Next()
			if !ok {
				time.Sleep(time.Millisecond)
				continue
			}
			if port := uint16(fr.Data[34])<<8 | uint16(fr.Data[35]); port != uint16(1000+got) {
				t.Fatalf("frame %d arrived with port %d: out of order", got, port)
			}
			r.Release()
			got++
		}
		if got != n {
			t.Fatalf("%d frames arrived, want %d", got, n)
		}
		f := frame(1)
		if a := testing.AllocsPerRun(200, func() {
			for range 10 {
				p.Add(f)
			}
			p.Send()
		}); a != 0 {
			t.Errorf("Pipe.Add and Send: %v allocs/op", a)
		}
		p.Close()
	})
}

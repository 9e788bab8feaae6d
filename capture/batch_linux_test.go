package capture

import (
	"errors"
	"os/exec"
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

// slowQueue puts a tbf queue of rate on the sending side of tn and opens a
// sender there with a 4 KiB send buffer: the queue holds the frames, and so
// the buffer.
func slowQueue(t *testing.T, tn testNet, rate string) *Sender {
	t.Helper()
	if _, err := exec.LookPath("tc"); err != nil {
		t.Skip("needs the tc command (iproute2)")
	}
	run(t, "tc", "-n", tn.NSB, "qdisc", "add", "dev", tn.IfB, "root", "tbf", "rate", rate, "burst", "4000", "limit", "1000000")
	s := openSenderIn(t, tn.NSB, tn.IfB)
	if err := unix.SetsockoptInt(s.Fd(), unix.SOL_SOCKET, unix.SO_SNDBUF, 4096); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestBatchWaitsForBuffer: a batch that fills the socket's send buffer
// waits for room instead of failing frames (the send itself never blocks),
// and the frames still leave in order.
func TestBatchWaitsForBuffer(t *testing.T) {
	inNetns(t, func(t *testing.T, tn testNet) {
		const frames = 60
		r := openRing(t, tn.IfA, testVIP, 80, RingConfig{FrameCount: 2 * frames})
		s := slowQueue(t, tn, "100mbit")
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
		got := waitFrames(t, r, frames, 5*time.Second, 20*time.Millisecond)
		if len(got) != frames {
			t.Fatalf("%d frames arrived, want %d", len(got), frames)
		}
		for i, f := range got {
			if sport := int(f.Data[34])<<8 | int(f.Data[35]); sport != 1000+i {
				t.Fatalf("frame %d arrived from port %d, want %d: out of order", i, sport, 1000+i)
			}
		}
	})
}

// TestBatchGivesUpOnFullBuffer: a socket buffer that stays full costs a
// Flush at most MaxBufferWait, and the frames left fail with EAGAIN.
func TestBatchGivesUpOnFullBuffer(t *testing.T) {
	inNetns(t, func(t *testing.T, tn testNet) {
		const frames = 40
		s := slowQueue(t, tn, "8kbit")
		var sent, again int
		b := s.NewBatch(frames, 1600, func(frame []byte, err error) {
			switch {
			case err == nil:
				sent++
			case errors.Is(err, unix.EAGAIN):
				again++
			default:
				t.Errorf("frame refused: %v", err)
			}
		})
		for i := range frames {
			b.Add(buildFrame(t, frameSpec{src: tn.IPB, dst: testVIP, sport: uint16(1000 + i), dport: 80, payload: 1000}))
		}
		start := time.Now()
		failed := b.Flush()
		took := time.Since(start)
		if took < MaxBufferWait || took > MaxBufferWait+500*time.Millisecond {
			t.Errorf("Flush took %v, want a wait of about %v", took, MaxBufferWait)
		}
		if sent == 0 || again == 0 || failed != again || sent+again != frames {
			t.Errorf("%d sent, %d failed with EAGAIN (Flush said %d) of %d: want some of each", sent, again, failed, frames)
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

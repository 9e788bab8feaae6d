package capture

import (
	"bytes"
	"net"
	"testing"
	"time"
)

var testVIP = [4]byte{10, 77, 0, 100}

func openSenderIn(t *testing.T, ns, ifname string) *Sender {
	t.Helper()
	var s *Sender
	var err error
	inNS(t, ns, func() { s, err = OpenSender(ifname) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openRing(t *testing.T, ifname string, vip [4]byte, port uint16, cfg RingConfig) *Ring {
	t.Helper()
	filter, err := ClientFilter([][4]byte{vip}, []uint16{port})
	if err != nil {
		t.Fatal(err)
	}
	r, err := OpenRing(ifname, filter, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func send(t *testing.T, s *Sender, frames ...[]byte) {
	t.Helper()
	for _, f := range frames {
		if err := s.Send(f); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRingFilter(t *testing.T) {
	inNetns(t, func(t *testing.T, tn testNet) {
		r := openRing(t, tn.IfA, testVIP, 80, RingConfig{})
		s := openSenderIn(t, tn.NSB, tn.IfB)
		if s.MAC() != tn.MACB {
			t.Errorf("sender MAC %x, want %x", s.MAC(), tn.MACB)
		}
		if s.MTU() != 1500 {
			t.Errorf("sender MTU %d, want 1500", s.MTU())
		}
		base := frameSpec{src: tn.IPB, dst: testVIP, sport: 40000, dport: 80, payload: 10}
		match1 := buildFrame(t, base)
		opt := base
		opt.ipOptions, opt.payload = 1, 1400
		match2 := buildFrame(t, opt)
		var others [][]byte
		for _, mod := range []func(*frameSpec){
			func(s *frameSpec) { s.dport = 81 },
			func(s *frameSpec) { s.dst = tn.IPA },
			func(s *frameSpec) { s.udp = true },
			func(s *frameSpec) { s.fragOffset = 100 },
		} {
			f := base
			mod(&f)
			others = append(others, buildFrame(t, f))
		}
		send(t, s, others[0], match1, others[1], others[2], match2, others[3])
		got := waitFrames(t, r, 2, 2*time.Second, 200*time.Millisecond)
		if len(got) != 2 {
			t.Fatalf("got %d frames, want 2", len(got))
		}
		for i, want := range [][]byte{match1, match2} {
			if !bytes.Equal(got[i].Data, want) {
				t.Errorf("frame %d differs:\n got %x\nwant %x", i, got[i].Data, want)
			}
			if got[i].WireLen != len(want) || got[i].Truncated() {
				t.Errorf("frame %d: WireLen %d, len %d, want %d", i, got[i].WireLen, len(got[i].Data), len(want))
			}
			if got[i].CsumPartial {
				t.Errorf("frame %d: CsumPartial on a frame with a full checksum", i)
			}
		}
		packets, drops, err := r.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if packets != 2 || drops != 0 {
			t.Errorf("Stats = %d packets, %d drops; want 2, 0", packets, drops)
		}
	})
}

func TestRingCsumPartial(t *testing.T) {
	inNetns(t, func(t *testing.T, tn testNet) {
		r := openRing(t, tn.IfA, tn.IPA, 9, RingConfig{})
		// A kernel TCP SYN from B: B's veth has tx checksum offload on, so the
		// checksum is left partial all the way into A.
		inNS(t, tn.NSB, func() {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(ip(tn.IPA), "9"), time.Second)
			if err == nil {
				c.Close()
			}
		})
		got := waitFrames(t, r, 1, 2*time.Second, 0)
		if len(got) == 0 {
			t.Fatal("no SYN captured")
		}
		if !got[0].CsumPartial {
			t.Errorf("CsumPartial false for a kernel TCP segment over veth with tx checksum offload")
		}
	})
}

func TestSenderIgnoreOutgoing(t *testing.T) {
	inNetns(t, func(t *testing.T, tn testNet) {
		local := openRing(t, tn.IfA, testVIP, 80, RingConfig{})
		var peer *Ring
		inNS(t, tn.NSB, func() { peer = openRing(t, tn.IfB, testVIP, 80, RingConfig{}) })
		s, err := OpenSender(tn.IfA)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		frame := buildFrame(t, frameSpec{src: tn.IPA, dst: testVIP, sport: 1234, dport: 80, fromA: true})
		send(t, s, frame)
		got := waitFrames(t, peer, 1, 2*time.Second, 0)
		if len(got) != 1 || !bytes.Equal(got[0].Data, frame) {
			t.Fatalf("peer received %d frames, want the one sent", len(got))
		}
		if own := waitFrames(t, local, 1, 200*time.Millisecond, 0); len(own) != 0 {
			t.Errorf("ring on the sending interface captured %d outgoing frames", len(own))
		}
		big := make([]byte, 14+1500+1)
		copy(big, frame[:14])
		if err := s.Send(big); err == nil {
			t.Error("Send of a frame over the MTU succeeded")
		}
	})
}

func TestRingOversized(t *testing.T) {
	inNetns(t, func(t *testing.T, tn testNet) {
		r := openRing(t, tn.IfA, testVIP, 80, RingConfig{FrameSize: 256, FrameCount: 64})
		s := openSenderIn(t, tn.NSB, tn.IfB)
		frame := buildFrame(t, frameSpec{src: tn.IPB, dst: testVIP, sport: 1, dport: 80, payload: 600})
		send(t, s, frame)
		got := waitFrames(t, r, 1, 2*time.Second, 0)
		if len(got) != 1 {
			t.Fatalf("got %d frames, want 1", len(got))
		}
		f := got[0]
		if f.WireLen != len(frame) || len(f.Data) != 256-ringHeaderRoom || !f.Truncated() {
			t.Errorf("WireLen %d len(Data) %d; want %d and %d", f.WireLen, len(f.Data), len(frame), 256-ringHeaderRoom)
		}
		if !bytes.Equal(f.Data, frame[:len(f.Data)]) {
			t.Error("truncated data is not the frame's head")
		}
	})
}

func TestRingWrapAndDrops(t *testing.T) {
	inNetns(t, func(t *testing.T, tn testNet) {
		r := openRing(t, tn.IfA, testVIP, 80, RingConfig{FrameSize: 2048, FrameCount: 8})
		s := openSenderIn(t, tn.NSB, tn.IfB)
		// Three rounds of the ring size, read in between: wraps twice.
		for round := 0; round < 3; round++ {
			var sent [][]byte
			for i := 0; i < 8; i++ {
				f := buildFrame(t, frameSpec{src: tn.IPB, dst: testVIP, sport: uint16(round*100 + i), dport: 80})
				sent = append(sent, f)
			}
			send(t, s, sent...)
			got := waitFrames(t, r, 8, 2*time.Second, 0)
			if len(got) != 8 {
				t.Fatalf("round %d: got %d frames, want 8", round, len(got))
			}
			for i := range got {
				if !bytes.Equal(got[i].Data, sent[i]) {
					t.Fatalf("round %d frame %d out of order or corrupt", round, i)
				}
			}
		}
		// Overrun: 12 frames into 8 slots without reading.
		for i := 0; i < 12; i++ {
			send(t, s, buildFrame(t, frameSpec{src: tn.IPB, dst: testVIP, sport: uint16(i), dport: 80}))
		}
		time.Sleep(100 * time.Millisecond)
		got := waitFrames(t, r, 8, time.Second, 100*time.Millisecond)
		if len(got) != 8 {
			t.Errorf("got %d frames after overrun, want 8", len(got))
		}
		packets, drops, err := r.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if packets != 36 || drops != 4 {
			t.Errorf("Stats = %d packets, %d drops; want 36, 4", packets, drops)
		}
	})
}

func TestRingAllocs(t *testing.T) {
	inNetns(t, func(t *testing.T, tn testNet) {
		r := openRing(t, tn.IfA, testVIP, 80, RingConfig{FrameCount: 512})
		s := openSenderIn(t, tn.NSB, tn.IfB)
		frame := buildFrame(t, frameSpec{src: tn.IPB, dst: testVIP, sport: 1, dport: 80})
		const n = 200
		if a := testing.AllocsPerRun(n, func() {
			if err := s.Send(frame); err != nil {
				t.Fatal(err)
			}
		}); a != 0 {
			t.Errorf("Sender.Send: %v allocs/op", a)
		}
		rings := []*Ring{r}
		if err := Wait(rings, time.Second); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		seen := 0
		if a := testing.AllocsPerRun(n, func() {
			if err := Wait(rings, 0); err != nil {
				t.Fatal(err)
			}
			if f, ok := r.Next(); ok {
				seen += len(f.Data) / len(frame)
				r.Release()
			}
		}); a != 0 {
			t.Errorf("Wait+Ring.Next+Release: %v allocs/op", a)
		}
		if seen < n {
			t.Errorf("read %d frames, want at least %d", seen, n)
		}
		// Wait with nothing ready goes through poll(2).
		waitFrames(t, r, 1<<30, 50*time.Millisecond, 0)
		if r.ready(r.cur) {
			t.Fatal("ring not drained")
		}
		if a := testing.AllocsPerRun(20, func() {
			if err := Wait(rings, time.Millisecond); err != nil {
				t.Fatal(err)
			}
		}); a != 0 {
			t.Errorf("Wait (poll): %v allocs/op", a)
		}
	})
}

func TestOpenErrors(t *testing.T) {
	if _, err := OpenRing("nonexistent0", nil, RingConfig{}); err == nil {
		t.Error("OpenRing on a missing interface succeeded")
	}
	if _, err := OpenRing("lo", nil, RingConfig{FrameSize: 100}); err == nil {
		t.Error("OpenRing with a misaligned frame size succeeded")
	}
	if _, err := OpenSender("nonexistent0"); err == nil {
		t.Error("OpenSender on a missing interface succeeded")
	}
}

// TestRingJumboFrame: slots of FrameSizeFor(MTU) hold a full frame of a
// jumbo-frame link whole (datapath sizes its rings so).
func TestRingJumboFrame(t *testing.T) {
	inNetns(t, func(t *testing.T, tn testNet) {
		run(t, "ip", "link", "set", tn.IfA, "mtu", "9000")
		run(t, "ip", "-n", tn.NSB, "link", "set", tn.IfB, "mtu", "9000")
		r := openRing(t, tn.IfA, testVIP, 80, RingConfig{FrameSize: FrameSizeFor(9000)})
		s := openSenderIn(t, tn.NSB, tn.IfB)
		send(t, s, buildFrame(t, frameSpec{src: tn.IPB, dst: testVIP, sport: 1234, dport: 80, payload: 9000 - 40}))
		got := waitFrames(t, r, 1, time.Second, 0)
		if len(got) != 1 {
			t.Fatalf("got %d frames, want 1", len(got))
		}
		if got[0].Truncated() || got[0].WireLen != 9014 {
			t.Fatalf("frame of %d bytes arrived with %d, want one whole 9014-byte frame", got[0].WireLen, len(got[0].Data))
		}
	})
}

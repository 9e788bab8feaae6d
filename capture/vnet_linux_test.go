package capture

import (
	"bytes"
	"testing"
	"time"

	"understudy/rewrite"
)

// TestOffloadRoundTrip sends a TCP super-frame with a partial checksum
// through a Batch whose sender keeps offloads. Where the sending device
// segments (veth's TSO), the super-frame reaches a VnetHdr ring whole, with
// its segment size and the checksum still partial; where the device cannot
// (TSO and checksum offload off), the kernel cuts it into segments whose
// checksums it completes from the frame's pseudo-header sum, and each must
// verify.
func TestOffloadRoundTrip(t *testing.T) {
	const gso, payload = 1000, 4*1000 + 321
	tests := []struct {
		name        string
		deviceOff   bool // ethtool -K tso off tx off on the sending side
		wantFrames  int
		wantGSO     uint16
		wantPartial bool
	}{
		{"device takes the super-frame whole", false, 1, gso, true},
		{"kernel cuts it and completes the checksums", true, 5, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inNetns(t, func(t *testing.T, tn testNet) {
				if tc.deviceOff {
					run(t, "ip", "netns", "exec", tn.NSB, "ethtool", "-K", tn.IfB, "tso", "off", "gso", "off", "tx", "off")
				}
				r := openRing(t, tn.IfA, testVIP, 80, RingConfig{FrameSize: FrameSizeFor(MaxSuperFrame), FrameCount: 16, VnetHdr: true})
				s := openSenderIn(t, tn.NSB, tn.IfB)
				if err := s.KeepOffloads(); err != nil {
					t.Fatal(err)
				}
				var refused error
				b := s.NewBatch(4, FrameSizeFor(MaxSuperFrame), func(_ []byte, err error) {
					if err != nil {
						refused = err
					}
				})
				f := buildFrame(t, frameSpec{src: tn.IPB, dst: testVIP, sport: 4000, dport: 80, payload: payload})
				for i := range f[54:] {
					f[54+i] = byte(i * 7)
				}
				var p rewrite.Packet
				if r := p.Parse(f, true, false); r != rewrite.OK {
					t.Fatalf("Parse: %v", r)
				}
				p.KeepOffloads(gso)
				p.Finish()
				if b.AddOffload(p.Frame(), p.Offload())+b.Flush() != 0 {
					t.Fatalf("super-frame refused: %v", refused)
				}
				got := waitFrames(t, r, tc.wantFrames, 2*time.Second, 100*time.Millisecond)
				if len(got) != tc.wantFrames {
					t.Fatalf("got %d frames, want %d", len(got), tc.wantFrames)
				}
				var data []byte
				next := p.Seq()
				for i, fr := range got {
					if fr.GSOSize != tc.wantGSO || fr.CsumPartial != tc.wantPartial {
						t.Errorf("frame %d: segment size %d, partial %v; want %d, %v", i, fr.GSOSize, fr.CsumPartial, tc.wantGSO, tc.wantPartial)
					}
					var q rewrite.Packet
					if r := q.Parse(fr.Data, fr.CsumPartial, true); r != rewrite.OK {
						t.Fatalf("frame %d: Parse with checksums verified: %v", i, r)
					}
					if q.Seq() != next {
						t.Errorf("frame %d: seq %d, want %d", i, q.Seq(), next)
					}
					next = q.Seq().Add(uint32(q.PayloadLen()))
					data = append(data, q.Payload()...)
				}
				if !bytes.Equal(data, p.Payload()) {
					t.Errorf("payload received (%d bytes) differs from the %d sent", len(data), len(p.Payload()))
				}
			})
		})
	}
}

// TestOffloadRefusedWithoutVnetHdr: a frame that asks for an offload on a
// plain sender fails instead of going out with a partial checksum.
func TestOffloadRefusedWithoutVnetHdr(t *testing.T) {
	inNetns(t, func(t *testing.T, tn testNet) {
		s := openSenderIn(t, tn.NSB, tn.IfB)
		var refused error
		b := s.NewBatch(2, 2048, func(_ []byte, err error) { refused = err })
		f := buildFrame(t, frameSpec{src: tn.IPB, dst: testVIP, sport: 4000, dport: 80, payload: 10})
		if b.AddOffload(f, rewrite.Offload{CsumStart: 34}) != 1 || refused != ErrOffloadsOff {
			t.Fatalf("AddOffload on a plain sender: refused %v, want %v", refused, ErrOffloadsOff)
		}
	})
}

// TestSendKeepsOffloads: Send on a sender that keeps offloads puts the
// header that asks nothing before the frame, which arrives as sent, and
// allocates nothing.
func TestSendKeepsOffloads(t *testing.T) {
	inNetns(t, func(t *testing.T, tn testNet) {
		r := openRing(t, tn.IfA, testVIP, 80, RingConfig{FrameSize: FrameSizeFor(MaxSuperFrame), FrameCount: 64, VnetHdr: true})
		s := openSenderIn(t, tn.NSB, tn.IfB)
		if err := s.KeepOffloads(); err != nil {
			t.Fatal(err)
		}
		f := buildFrame(t, frameSpec{src: tn.IPB, dst: testVIP, sport: 4000, dport: 80, payload: 300})
		send(t, s, f)
		got := waitFrames(t, r, 1, time.Second, 50*time.Millisecond)
		if len(got) != 1 || !bytes.Equal(got[0].Data, f) || got[0].GSOSize != 0 {
			t.Fatalf("got %d frames; want the one sent, whole and plain", len(got))
		}
		if a := testing.AllocsPerRun(20, func() {
			if err := s.Send(f); err != nil {
				t.Fatal(err)
			}
		}); a != 0 {
			t.Errorf("Send with offloads kept: %v allocs/op", a)
		}
	})
}

package capture

import (
	"testing"
	"time"
)

// TestRingRejectsOtherHost: on a promiscuous interface (tcpdump, a bridge
// port) the kernel hands taps frames addressed to other hosts' MACs; the
// gateway is not their next hop and must not forward them.
func TestRingRejectsOtherHost(t *testing.T) {
	inNetns(t, func(t *testing.T, tn testNet) {
		r := openRing(t, tn.IfA, testVIP, 80, RingConfig{FrameCount: 64})
		run(t, "ip", "link", "set", tn.IfA, "promisc", "on")
		s := openSenderIn(t, tn.NSB, tn.IfB)
		f := buildFrame(t, frameSpec{src: tn.IPB, dst: testVIP, sport: 1234, dport: 80})
		other := append([]byte(nil), f...)
		copy(other[0:6], []byte{0x02, 0, 0, 0, 0, 0x77})
		send(t, s, other)
		send(t, s, f) // then one for us, so the wait ends on it
		got := waitFrames(t, r, 2, 300*time.Millisecond, 0)
		if len(got) != 1 || got[0].Data[5] == 0x77 {
			t.Fatalf("ring delivered %d frames, want only the one addressed to this host", len(got))
		}
	})
}

// TestRingRejectsVLANTagged: the kernel strips a VLAN tag before the taps
// see a frame, so a frame of another VLAN would look native; a reply from
// this interface would leave untagged.
func TestRingRejectsVLANTagged(t *testing.T) {
	inNetns(t, func(t *testing.T, tn testNet) {
		r := openRing(t, tn.IfA, testVIP, 80, RingConfig{FrameCount: 64})
		s := openSenderIn(t, tn.NSB, tn.IfB)
		f := buildFrame(t, frameSpec{src: tn.IPB, dst: testVIP, sport: 1234, dport: 80})
		tagged := append(append(append([]byte{}, f[:12]...), 0x81, 0x00, 0x00, 0x0a), f[12:]...) // VLAN 10
		send(t, s, tagged)
		send(t, s, f)
		got := waitFrames(t, r, 2, 300*time.Millisecond, 0)
		if len(got) != 1 {
			t.Fatalf("ring delivered %d frames, want only the untagged one", len(got))
		}
	})
}

package datapath

import (
	"testing"

	"understudy/capture"
)

// TestRingConfig: a ring slot holds a whole frame of the larger MTU, or a
// whole super-frame under KeepOffloads; what the configuration asks for
// beyond that stays.
func TestRingConfig(t *testing.T) {
	tests := []struct {
		name      string
		in        capture.RingConfig
		keep      bool
		mtu       int
		wantSize  int
		wantCount int
	}{
		{"MTU 1500: the default", capture.RingConfig{}, false, 1500, capture.DefaultFrameSize, 0},
		{"jumbo frames", capture.RingConfig{}, false, 9000, capture.FrameSizeFor(9000), 0},
		{"configured larger stays", capture.RingConfig{FrameSize: 16384, FrameCount: 512}, false, 9000, 16384, 512},
		{"configured smaller than the MTU grows", capture.RingConfig{FrameSize: 2048}, false, 4000, capture.FrameSizeFor(4000), 0},
		{"super-frames", capture.RingConfig{}, true, 1500, capture.FrameSizeFor(capture.MaxSuperFrame), offloadFrameCount},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ringConfig(tc.in, tc.keep, tc.mtu)
			if got.FrameSize != tc.wantSize || got.FrameCount != tc.wantCount || got.VnetHdr != tc.keep {
				t.Fatalf("ringConfig = %+v, want size %d count %d vnet %v", got, tc.wantSize, tc.wantCount, tc.keep)
			}
			// The Ethernet frame of the MTU, with a VLAN tag, fits.
			if room := got.FrameSize - 66 - 10; room < tc.mtu+18 {
				t.Fatalf("slot of %d bytes holds %d bytes of frame, want %d", got.FrameSize, room, tc.mtu+18)
			}
		})
	}
}

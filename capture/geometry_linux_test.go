package capture

import "testing"

// TestRingGeometry: small frames share a page as before; a super-frame's
// slot shares a block with fifteen or more others instead of filling half
// of a block of its own.
func TestRingGeometry(t *testing.T) {
	tests := []struct {
		name                    string
		frameSize, count        int
		block, perBlock, blocks int
		minUse                  float64 // fraction of the ring's memory in frames
	}{
		{"default frames", DefaultFrameSize, DefaultFrameCount, 4096, 2, 2048, 1},
		{"one frame", DefaultFrameSize, 1, 4096, 2, 1, 1},
		{"super-frame slots", FrameSizeFor(MaxSuperFrame), 16 * 31, 2 << 20, 31, 16, 0.95},
		{"a page exactly", 4096, 10, 4096, 1, 10, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			block, per, blocks := ringGeometry(4096, tc.frameSize, tc.count)
			if block != tc.block || per != tc.perBlock || blocks != tc.blocks {
				t.Fatalf("ringGeometry = block %d, %d per block, %d blocks; want %d, %d, %d",
					block, per, blocks, tc.block, tc.perBlock, tc.blocks)
			}
			if use := float64(per*tc.frameSize) / float64(block); use < tc.minUse {
				t.Errorf("frames use %.2f of each block, want at least %.2f", use, tc.minUse)
			}
		})
	}
}

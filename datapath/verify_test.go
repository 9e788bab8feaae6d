package datapath

import (
	"testing"

	"understudy/capture"
)

// TestVerifies: checksums are verified as configured, except a
// super-frame's, which fraglist GRO hands up with the first segment's
// checksum in the field.
func TestVerifies(t *testing.T) {
	tests := []struct {
		name   string
		verify bool
		frame  capture.Frame
		want   bool
	}{
		{"plain frame", true, capture.Frame{}, true},
		{"partial plain frame", true, capture.Frame{CsumPartial: true}, true},
		{"super-frame", true, capture.Frame{GSOSize: 1448}, false},
		{"verification off", false, capture.Frame{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := &Gateway{cfg: Config{VerifyChecksums: tc.verify}}
			if got := g.verifies(tc.frame); got != tc.want {
				t.Errorf("verifies = %v, want %v", got, tc.want)
			}
		})
	}
}

package capture

import (
	"encoding/binary"
	"testing"

	"understudy/rewrite"
)

// TestVnetHdr: the header asks for exactly what the offload says, in the
// host's byte order; a received header gives a segment size for IPv4/TCP
// only.
func TestVnetHdr(t *testing.T) {
	const csumStart, hdrLen = 34, 66
	csum := rewrite.Offload{CsumStart: csumStart, CsumOffset: 16, HdrLen: hdrLen}
	super := csum
	super.GSOSize = 1448
	superECN := super
	superECN.ECN = true
	tests := []struct {
		name      string
		o         rewrite.Offload
		flags     byte
		gsoType   byte
		hdrLen    uint16
		gsoSize   uint16
		csumStart uint16
		csumOff   uint16
	}{
		{"nothing asked", rewrite.Offload{}, 0, 0, 0, 0, 0, 0},
		{"checksum only", csum, 1, 0, 0, 0, csumStart, 16},
		{"super-frame", super, 1, 1, hdrLen, 1448, csumStart, 16},
		{"super-frame whose first segment carries CWR", superECN, 1, 0x81, hdrLen, 1448, csumStart, 16},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := []byte{0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee}
			putVnetHdr(h, tc.o)
			ne := binary.NativeEndian
			if h[0] != tc.flags || h[1] != tc.gsoType || ne.Uint16(h[2:]) != tc.hdrLen || ne.Uint16(h[4:]) != tc.gsoSize ||
				ne.Uint16(h[6:]) != tc.csumStart || ne.Uint16(h[8:]) != tc.csumOff {
				t.Fatalf("header % x", h)
			}
			if got := vnetGSOSize(h); got != tc.gsoSize {
				t.Errorf("vnetGSOSize of the header written = %d, want %d", got, tc.gsoSize)
			}
		})
	}
	// TCP over IPv6 (gso_type 4) and UDP (3) super-frames are not ours.
	for _, typ := range []byte{3, 4, 5} {
		h := make([]byte, vnetHdrLen)
		h[1] = typ
		binary.NativeEndian.PutUint16(h[4:], 1400)
		if got := vnetGSOSize(h); got != 0 {
			t.Errorf("gso_type %d: segment size %d, want 0", typ, got)
		}
	}
}

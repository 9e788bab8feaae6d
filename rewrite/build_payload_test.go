package rewrite

import (
	"bytes"
	"testing"
)

func TestBuildWithPayload(t *testing.T) {
	payload := bytes.Repeat([]byte("replay"), 200)
	s := Spec{Src: [4]byte{10, 0, 0, 1}, Dst: [4]byte{10, 0, 0, 2}, SrcPort: 80, DstPort: 4000,
		Seq: 0xFFFFFFF0, Ack: 7, Flags: ACK | PSH, Window: 100, WScale: -1, HasTS: true, TSval: 1, TSecr: 2,
		Payload: payload}
	buf := make([]byte, 2048)
	var p Packet
	n := Build(buf, &s, &p)
	if n != EthLen+20+32+len(payload) || !bytes.Equal(p.Payload(), payload) || p.SegLen() != uint32(len(payload)) {
		t.Fatalf("built %d bytes, payload %d", n, p.PayloadLen())
	}
	if !p.VerifyChecksums() {
		t.Fatal("bad checksums")
	}
	var q Packet
	if r := q.Parse(buf[:n], false, true); r != OK || q.Seq() != 0xFFFFFFF0 {
		t.Fatalf("reparse: %v", r)
	}
	if Build(make([]byte, BuildMin+len(payload)-1), &s, &q) != 0 {
		t.Fatal("Build wrote past a short buffer")
	}
}

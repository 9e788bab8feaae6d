package tcpstate

import (
	"runtime"
	"testing"
	"unsafe"

	"understudy/rewrite"
)

// TestFlowSize keeps a Flow within the allocator's 480-byte size class: the
// next is 512, so a field that pushes it over costs every flow 32 bytes.
// Take the room from padding first (small fields next to small ones).
func TestFlowSize(t *testing.T) {
	if n := unsafe.Sizeof(Flow{}); n > 480 {
		t.Fatalf("a Flow is %d bytes, over the 480-byte size class", n)
	}
}

// TestMemoryPerFlow holds the gateway to at most 1 KiB of heap per
// established flow with no buffered data (the target), measured
// over 100k flows: the table's map and each Flow.
func TestMemoryPerFlow(t *testing.T) {
	const n = 100000
	tab := New(Config{
		Services:    []Service{{VIP: vip, Port: vport}},
		Servers:     [2][4]byte{primaryIP, backupIP},
		MaxHalfOpen: n,
	})
	out := NewOutput(maxFrame + 64)
	buf := make([]byte, 2048)
	var pkt rewrite.Packet
	feed := func(fromClient bool, s rewrite.Spec) {
		l := rewrite.Build(buf, &s, &pkt)
		if r := pkt.Parse(buf[:l], false, false); r != rewrite.OK {
			t.Fatalf("parse: %v", r)
		}
		out.Reset()
		if fromClient {
			tab.HandleClient(int64(1e9), &pkt, out)
		} else {
			tab.HandleServer(int64(1e9), &pkt, out)
		}
	}
	handshake := func(i int) {
		cli := [4]byte{10, 9, byte(i >> 16), byte(i >> 8)}
		port := uint16(1024 + i&0xff)
		c := rewrite.Spec{Src: cli, Dst: vip, SrcPort: port, DstPort: vport, Seq: 100, Flags: rewrite.SYN,
			Window: 1000, WScale: 7, MSS: 1460, SACKPermitted: true, HasTS: true, TSval: 1}
		feed(true, c)
		for s, ip := range [][4]byte{primaryIP, backupIP} {
			sa := rewrite.Spec{Src: ip, Dst: cli, SrcPort: vport, DstPort: port, Seq: rewrite.Seq(1000 * (s + 1)), Ack: 101,
				Flags: rewrite.SYN | rewrite.ACK, Window: 65000, WScale: 7, MSS: 1460, SACKPermitted: true, HasTS: true, TSval: 5, TSecr: 1}
			feed(false, sa)
		}
		c.Flags, c.Seq, c.Ack, c.WScale, c.MSS, c.SACKPermitted, c.TSval, c.TSecr = rewrite.ACK, 101, 1001, -1, 0, false, 2, 5
		feed(true, c)
	}
	handshake(0)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 1; i <= n; i++ {
		handshake(i)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if tab.Len() != n+1 {
		t.Fatalf("%d flows, want %d", tab.Len(), n+1)
	}
	established := 0
	tab.ForEach(func(f *Flow) {
		if f.State() == StateEstablished && f.Protection() == Protected {
			established++
		}
	})
	if established != n+1 {
		t.Fatalf("%d established protected flows, want %d", established, n+1)
	}
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%.0f bytes of heap per established flow over %d flows", per, n)
	if per > 1024 {
		t.Errorf("%.0f bytes of heap per established flow, want at most 1024", per)
	}
	runtime.KeepAlive(tab)
}

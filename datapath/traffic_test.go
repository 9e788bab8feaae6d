package datapath

import (
	"path/filepath"
	"testing"

	"understudy/capture"
	"understudy/pcaptap"
	"understudy/rewrite"
	"understudy/tcpstate"
)

// ethFrame builds an Ethernet frame carrying a TCP segment from src to dst.
func ethFrame(t *testing.T, src, dst [4]byte, payload int) []byte {
	t.Helper()
	s := rewrite.Spec{Src: src, Dst: dst, SrcPort: 40000, DstPort: 80, Flags: rewrite.ACK, WScale: -1, Payload: make([]byte, payload)}
	b := make([]byte, 2048)
	n := rewrite.Build(b, &s, &rewrite.Packet{})
	if n == 0 {
		t.Fatal("frame not built")
	}
	return b[:n]
}

// Frames are counted by direction and by the server they came from or go
// to, whatever leg of a flow they belong to, and handed to the pcap tap:
// with no allocation, as befits the per-frame path.
func TestTrafficCounting(t *testing.T) {
	primary, backup, client, vip := [4]byte{10, 0, 0, 10}, [4]byte{10, 0, 0, 11}, [4]byte{198, 51, 100, 7}, [4]byte{192, 0, 2, 100}
	tap, err := pcaptap.Open(pcaptap.Config{Path: filepath.Join(t.TempDir(), "t.pcap")})
	if err != nil {
		t.Fatal(err)
	}
	defer tap.Close()
	g := &Gateway{servers: [2][4]byte{primary, backup}, cfg: Config{Pcap: tap}}
	fromClient := ethFrame(t, client, vip, 100)
	fromBackup := ethFrame(t, backup, client, 1000)
	toPrimary := ethFrame(t, client, primary, 100)
	toClient := ethFrame(t, vip, client, 1000)
	step := func() {
		g.received(0, capture.Frame{Data: fromClient, WireLen: len(fromClient)})
		g.received(1, capture.Frame{Data: fromBackup, WireLen: len(fromBackup)})
		g.sent(tcpstate.ServerSide, toPrimary)
		g.sent(tcpstate.ClientSide, toClient)
	}
	step()
	want := []TrafficCount{
		{"in", "client", 1, uint64(len(fromClient))}, {"in", "primary", 0, 0}, {"in", "backup", 1, uint64(len(fromBackup))},
		{"out", "client", 1, uint64(len(toClient))}, {"out", "primary", 1, uint64(len(toPrimary))}, {"out", "backup", 0, 0},
	}
	got := g.traffic.status()
	if len(got) != len(want) {
		t.Fatalf("%+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("%+v, want %+v", got[i], want[i])
		}
	}
	if g.clientRx != 1 || g.serverRx != 1 {
		t.Errorf("rx %d %d", g.clientRx, g.serverRx)
	}
	if a := testing.AllocsPerRun(1000, step); a != 0 {
		t.Errorf("counting and tapping allocate %v times per step", a)
	}
	tap.Close()
	// One step above, one warm-up run of AllocsPerRun, then 1000.
	if st := tap.Stats(); st.Frames+st.Dropped != 4*1002 {
		t.Errorf("tap saw %d frames (+%d dropped), want %d", st.Frames, st.Dropped, 4*1002)
	}
}

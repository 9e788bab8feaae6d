package pcaptap

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

var (
	gwMAC  = []byte{0x02, 0, 0, 0, 0, 0x01}
	cliMAC = []byte{0x02, 0, 0, 0, 0, 0x02}
)

// frame builds an Ethernet frame carrying a TCP segment with payload.
func frame(t testing.TB, src []byte, sport uint16, payload int) []byte {
	eth := &layers.Ethernet{SrcMAC: src, DstMAC: gwMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: []byte{10, 77, 1, 2}, DstIP: []byte{10, 77, 0, 100}}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: 80, ACK: true, Seq: 1000, Window: 500}
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, tcp, gopacket.Payload(bytes.Repeat([]byte{'x'}, payload))); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type record struct {
	typ     layers.LinuxSLLPacketType
	addr    []byte
	sport   uint16
	payload int
	capLen  int
	origLen int
}

// readBack decodes a capture file with gopacket.
func readBack(t *testing.T, path string) []record {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if r.LinkType() != layers.LinkTypeLinuxSLL {
		t.Fatalf("%s: link type %v, want Linux SLL", path, r.LinkType())
	}
	var out []record
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		p := gopacket.NewPacket(data, layers.LayerTypeLinuxSLL, gopacket.Default)
		sll, _ := p.Layer(layers.LayerTypeLinuxSLL).(*layers.LinuxSLL)
		tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if sll == nil || tcp == nil || p.ErrorLayer() != nil {
			t.Fatalf("%s: undecodable record: %v", path, p)
		}
		if ci.Timestamp.IsZero() || time.Since(ci.Timestamp) > time.Minute {
			t.Fatalf("%s: timestamp %v", path, ci.Timestamp)
		}
		out = append(out, record{typ: sll.PacketType, addr: sll.Addr, sport: uint16(tcp.SrcPort), payload: len(tcp.Payload),
			capLen: ci.CaptureLength, origLen: ci.Length})
	}
}

func TestTapReadBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gw.pcap")
	tap, err := Open(Config{Path: path, SnapLen: 200})
	if err != nil {
		t.Fatal(err)
	}
	in := frame(t, cliMAC, 40000, 100)
	out := frame(t, gwMAC, 40001, 100)
	big := frame(t, gwMAC, 40002, 1000) // beyond the snap length: cut, with its length kept
	tap.Frame(In, in, len(in))
	tap.Frame(Out, out, len(out))
	tap.Frame(Out, big, len(big))
	tap.Frame(In, in[:10], 10) // shorter than an Ethernet header: ignored
	if err := tap.Close(); err != nil {
		t.Fatal(err)
	}
	got := readBack(t, path)
	want := []record{
		{layers.LinuxSLLPacketTypeHost, cliMAC, 40000, 100, 16 + 140, 16 + 140},
		{layers.LinuxSLLPacketTypeOutgoing, gwMAC, 40001, 100, 16 + 140, 16 + 140},
		{layers.LinuxSLLPacketTypeOutgoing, gwMAC, 40002, 200 - 40, 16 + 200, 16 + 1040},
	}
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.typ != w.typ || !bytes.Equal(g.addr, w.addr) || g.sport != w.sport || g.payload != w.payload ||
			g.capLen != w.capLen || g.origLen != w.origLen {
			t.Errorf("record %d: %+v, want %+v", i, g, w)
		}
	}
	if st := tap.Stats(); st.Frames != 3 || st.Dropped != 0 || st.Errors != 0 {
		t.Errorf("stats %+v", st)
	}
}

// The datapath never waits for the writer: with every slot taken a frame is
// dropped and counted.
func TestTapDropsWhenFull(t *testing.T) {
	tap := newTap(Config{Path: filepath.Join(t.TempDir(), "x.pcap"), Slots: 4})
	f := frame(t, cliMAC, 40000, 10)
	for i := 0; i < 7; i++ {
		tap.Frame(In, f, len(f)) // no writer runs: the slots fill up
	}
	if d := tap.Stats().Dropped; d != 3 {
		t.Fatalf("dropped %d, want 3", d)
	}
	if err := tap.create(); err != nil {
		t.Fatal(err)
	}
	go tap.run()
	if err := tap.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readBack(t, tap.cfg.Path); len(got) != 4 {
		t.Fatalf("%d frames written, want the 4 buffered", len(got))
	}
}

func TestTapFrameAllocs(t *testing.T) {
	tap, err := Open(Config{Path: filepath.Join(t.TempDir(), "a.pcap")})
	if err != nil {
		t.Fatal(err)
	}
	defer tap.Close()
	f := frame(t, cliMAC, 40000, 1400)
	if n := testing.AllocsPerRun(1000, func() { tap.Frame(Out, f, len(f)) }); n != 0 {
		t.Fatalf("Frame allocates %v times per call", n)
	}
}

func TestTapRotation(t *testing.T) {
	cases := []struct {
		name  string
		keep  int
		files []string
	}{
		{"keep 2", 2, []string{"r.pcap", "r.pcap.1", "r.pcap.2"}},
		{"keep none", -1, []string{"r.pcap"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "r.pcap")
			const max = 4096
			tap, err := Open(Config{Path: path, MaxBytes: max, Keep: tc.keep})
			if err != nil {
				t.Fatal(err)
			}
			f := frame(t, cliMAC, 40000, 500) // 572 bytes a record: 7 a file
			const n = 40
			for i := 0; i < n; i++ {
				tap.Frame(In, f, len(f))
				waitWritten(t, tap, uint64(i+1))
			}
			if err := tap.Close(); err != nil {
				t.Fatal(err)
			}
			entries, _ := os.ReadDir(dir)
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			if strings.Join(names, " ") != strings.Join(tc.files, " ") {
				t.Fatalf("files %v, want %v", names, tc.files)
			}
			for i, name := range names {
				p := filepath.Join(dir, name)
				fi, _ := os.Stat(p)
				if fi.Size() > max {
					t.Errorf("%s: %d bytes, over %d", name, fi.Size(), max)
				}
				got := len(readBack(t, p))
				// 40 frames at 7 a file: the newest holds the last 5, the rotated ones 7.
				if want := map[bool]int{true: 5, false: 7}[i == 0]; got != want {
					t.Errorf("%s holds %d frames, want %d", name, got, want)
				}
			}
			if st := tap.Stats(); st.Frames != n || st.Rotations != 5 || st.Errors != 0 || st.Dropped != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// A capture left by an earlier run is kept as FILE.1.
func TestTapKeepsEarlierRun(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "r.pcap")
	if err := os.WriteFile(path, []byte("earlier"), 0o600); err != nil {
		t.Fatal(err)
	}
	tap, err := Open(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	f := frame(t, cliMAC, 40000, 5)
	tap.Frame(In, f, len(f))
	if err := tap.Close(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path + ".1"); string(b) != "earlier" {
		t.Fatalf("%s.1 holds %q", path, b)
	}
	if got := readBack(t, path); len(got) != 1 {
		t.Fatalf("%d frames in the new file", len(got))
	}
}

func waitWritten(t *testing.T, tap *Tap, n uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for tap.Stats().Frames < n {
		if time.Now().After(deadline) {
			t.Fatalf("writer stuck at %d frames, want %d", tap.Stats().Frames, n)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// TestTcpdumpReads: tcpdump reads the file and prints each frame's
// direction, and its inbound/outbound filters select by it.
func TestTcpdumpReads(t *testing.T) {
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("tcpdump is not installed: apt-get install -y tcpdump")
	}
	path := filepath.Join(t.TempDir(), "d.pcap")
	tap, err := Open(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	in, out := frame(t, cliMAC, 40000, 10), frame(t, gwMAC, 40001, 10)
	tap.Frame(In, in, len(in))
	tap.Frame(Out, out, len(out))
	if err := tap.Close(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		filter string
		want   []string // one per line printed, in order
	}{
		{"", []string{" In 02:00:00:00:00:02 ethertype IPv4 (0x0800), length 66: 10.77.1.2.40000 > 10.77.0.100.80",
			" Out 02:00:00:00:00:01 ethertype IPv4 (0x0800), length 66: 10.77.1.2.40001 > 10.77.0.100.80"}},
		{"inbound", []string{" In 02:00:00:00:00:02 "}},
		{"outbound", []string{" Out 02:00:00:00:00:01 "}},
	}
	for _, tc := range cases {
		args := []string{"-enr", path}
		if tc.filter != "" {
			args = append(args, tc.filter)
		}
		o, err := exec.Command("tcpdump", args...).Output()
		if err != nil {
			t.Fatalf("tcpdump %v: %v", args, err)
		}
		lines := strings.Split(strings.TrimSpace(string(o)), "\n")
		if len(lines) != len(tc.want) {
			t.Fatalf("tcpdump %v printed %d lines, want %d:\n%s", args, len(lines), len(tc.want), o)
		}
		for i, w := range tc.want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("tcpdump %v line %d: %q, want %q in it", args, i, lines[i], w)
			}
		}
	}
}

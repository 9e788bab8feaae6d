package testbed

import (
	"bytes"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Unit tests of the failover helpers: no privileges needed.

// seg is one TCP segment of a synthetic capture, at ms milliseconds.
type seg struct {
	ms       int
	fromVIP  bool
	flags    string // any of S F R
	seq, len uint32
	port     layers.TCPPort // the client's port; 0 is 40000
	shut     bool           // advertises a zero window
	small    bool           // advertises a window of one byte
	wscale   int            // a SYN's window scale option, if above 0
}

func synth(t *testing.T, segs ...seg) Packets {
	t.Helper()
	t0 := time.Unix(1000, 0)
	var ps Packets
	for _, s := range segs {
		cport := s.port
		if cport == 0 {
			cport = 40000
		}
		src, dst, sport, dport := ClientIP, VIP, cport, layers.TCPPort(80)
		if s.fromVIP {
			src, dst, sport, dport = VIP, ClientIP, 80, cport
		}
		ip := &layers.IPv4{Version: 4, TTL: 64, SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst), Protocol: layers.IPProtocolTCP}
		tcp := &layers.TCP{SrcPort: sport, DstPort: dport, Seq: s.seq, ACK: !strings.Contains(s.flags, "S") || s.fromVIP,
			SYN: strings.Contains(s.flags, "S"), FIN: strings.Contains(s.flags, "F"), RST: strings.Contains(s.flags, "R"), Window: 100}
		if s.shut {
			tcp.Window = 0
		}
		if s.small {
			tcp.Window = 1
		}
		if s.wscale > 0 {
			tcp.Options = []layers.TCPOption{{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{byte(s.wscale)}}}
		}
		_ = tcp.SetNetworkLayerForChecksum(ip)
		eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
			EthernetType: layers.EthernetTypeIPv4}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
			eth, ip, tcp, gopacket.Payload(make([]byte, s.len))); err != nil {
			t.Fatal(err)
		}
		p := gopacket.NewPacket(buf.Bytes(), layers.LinkTypeEthernet, gopacket.Default)
		p.Metadata().Timestamp = t0.Add(time.Duration(s.ms) * time.Millisecond)
		ps = append(ps, p)
	}
	return ps
}

func TestStall(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	tests := []struct {
		name      string
		segs      []seg
		since     time.Time
		wantGap   time.Duration
		wantStart time.Time
	}{
		{
			name: "steady download",
			segs: []seg{{ms: 0, flags: "S"}, {ms: 1, fromVIP: true, flags: "S"}, {ms: 2, fromVIP: true, seq: 1, len: 100},
				{ms: 4, fromVIP: true, seq: 101, len: 100}, {ms: 5, fromVIP: true, seq: 201, len: 100}},
			wantGap: 2 * time.Millisecond, wantStart: at(2),
		},
		{
			name: "failover pause mid-download",
			segs: []seg{{ms: 0, flags: "S"}, {ms: 1, fromVIP: true, flags: "S"}, {ms: 2, fromVIP: true, seq: 1, len: 100},
				{ms: 10, seq: 1}, {ms: 90, fromVIP: true, seq: 101, len: 100}, {ms: 91, fromVIP: true, seq: 201, len: 100}},
			wantGap: 88 * time.Millisecond, wantStart: at(2),
		},
		{
			name:    "waiting for the SYN-ACK counts",
			segs:    []seg{{ms: 0, flags: "S"}, {ms: 300, fromVIP: true, flags: "S"}, {ms: 301, fromVIP: true, seq: 1, len: 10}},
			wantGap: 300 * time.Millisecond, wantStart: at(0),
		},
		{
			name: "silence after the reply is not a stall",
			segs: []seg{{ms: 0, flags: "S"}, {ms: 1, fromVIP: true, flags: "S"}, {ms: 2, fromVIP: true, seq: 1, len: 10},
				{ms: 900, fromVIP: true, flags: "F", seq: 11}},
			wantGap: time.Millisecond, wantStart: at(0),
		},
		{
			name: "a zero window is the client's wait, counted from its reopening",
			segs: []seg{{ms: 0, flags: "S"}, {ms: 1, fromVIP: true, flags: "S"}, {ms: 2, fromVIP: true, seq: 1, len: 100},
				{ms: 3, seq: 1, shut: true}, {ms: 150, fromVIP: true, seq: 101}, {ms: 210, seq: 1},
				{ms: 215, fromVIP: true, seq: 101, len: 100}},
			wantGap: 5 * time.Millisecond, wantStart: at(210),
		},
		{
			name: "a window below one segment is shut too: the sender waits for its persist timer",
			segs: []seg{{ms: 0, flags: "S"}, {ms: 1, fromVIP: true, flags: "S"}, {ms: 2, fromVIP: true, seq: 1, len: 100},
				{ms: 3, seq: 101, small: true}, {ms: 210, fromVIP: true, seq: 101, len: 1}, {ms: 211, seq: 102},
				{ms: 215, fromVIP: true, seq: 102, len: 100}},
			wantGap: 4 * time.Millisecond, wantStart: at(211),
		},
		{
			name: "a scaled window of one unit holds a segment",
			segs: []seg{{ms: 0, flags: "S", wscale: 7}, {ms: 1, fromVIP: true, flags: "S", wscale: 7}, {ms: 2, fromVIP: true, seq: 1, len: 100},
				{ms: 3, seq: 101, small: true}, {ms: 90, fromVIP: true, seq: 101, len: 100}},
			wantGap: 88 * time.Millisecond, wantStart: at(2),
		},
		{
			name: "no scaling unless both SYNs offer it",
			segs: []seg{{ms: 0, flags: "S", wscale: 7}, {ms: 1, fromVIP: true, flags: "S"}, {ms: 2, fromVIP: true, seq: 1, len: 100},
				{ms: 3, seq: 101, small: true}, {ms: 210, fromVIP: true, seq: 101, len: 1}, {ms: 211, seq: 102},
				{ms: 215, fromVIP: true, seq: 102, len: 100}},
			wantGap: 4 * time.Millisecond, wantStart: at(211),
		},
		{
			name: "a stall after the window reopened counts",
			segs: []seg{{ms: 0, flags: "S"}, {ms: 1, fromVIP: true, flags: "S"}, {ms: 2, fromVIP: true, seq: 1, len: 100},
				{ms: 3, seq: 1, shut: true}, {ms: 100, seq: 1}, {ms: 170, fromVIP: true, seq: 101, len: 100}},
			wantGap: 70 * time.Millisecond, wantStart: at(100),
		},
		{
			name: "idle keep-alive measured from the next request",
			segs: []seg{{ms: 0, flags: "S"}, {ms: 1, fromVIP: true, flags: "S"}, {ms: 2, fromVIP: true, seq: 1, len: 10},
				{ms: 1000, seq: 1, len: 50}, {ms: 1040, fromVIP: true, seq: 11, len: 10}},
			since:   at(1000),
			wantGap: 40 * time.Millisecond, wantStart: at(1000),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := synth(t, tc.segs...).Stall(tc.since)
			if got.Gap != tc.wantGap || !got.Start.Equal(tc.wantStart) {
				t.Errorf("stall %v, want %v from %s", got, tc.wantGap, tc.wantStart.Format("05.000"))
			}
		})
	}
	if got := synth(t, seg{ms: 0, flags: "S"}).Stall(time.Time{}); got != (Stall{}) {
		t.Errorf("no reply: stall %v, want none", got)
	}
}

func TestEarlyFINs(t *testing.T) {
	const isn = 1 << 31 // sequence numbers that wrap inside the stream
	tests := []struct {
		name     string
		segs     []seg
		minReply int64
		want     int
	}{
		{
			name: "FIN after the whole reply",
			segs: []seg{{ms: 1, fromVIP: true, flags: "S", seq: isn}, {ms: 2, fromVIP: true, seq: isn + 1, len: 100},
				{ms: 3, fromVIP: true, flags: "F", seq: isn + 101}},
			minReply: 100, want: 0,
		},
		{
			name:     "FIN on the last data segment",
			segs:     []seg{{ms: 1, fromVIP: true, flags: "S", seq: isn}, {ms: 2, fromVIP: true, flags: "F", seq: isn + 1, len: 100}},
			minReply: 100, want: 0,
		},
		{
			name: "data after a FIN",
			segs: []seg{{ms: 2, fromVIP: true, seq: 1, len: 100}, {ms: 3, fromVIP: true, flags: "F", seq: 101},
				{ms: 4, fromVIP: true, seq: 101, len: 100}},
			want: 1,
		},
		{
			name: "FIN below the data's end",
			segs: []seg{{ms: 2, fromVIP: true, seq: 1, len: 200}, {ms: 3, fromVIP: true, flags: "F", seq: 101}},
			want: 1,
		},
		{
			name: "reply cut short by a FIN",
			segs: []seg{{ms: 1, fromVIP: true, flags: "S", seq: isn}, {ms: 2, fromVIP: true, seq: isn + 1, len: 100},
				{ms: 3, fromVIP: true, flags: "F", seq: isn + 101}},
			minReply: 1000, want: 1,
		},
		{
			name: "a client FIN is the client's business",
			segs: []seg{{ms: 2, fromVIP: true, seq: 1, len: 100}, {ms: 3, flags: "F", seq: 1}},
			want: 0,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := synth(t, tc.segs...).EarlyFINs(tc.minReply); len(got) != tc.want {
				t.Errorf("%d early FINs, want %d:\n%s", len(got), tc.want, got)
			}
		})
	}
}

func TestClientViewProblems(t *testing.T) {
	clean := synth(t, seg{ms: 0, flags: "S"}, seg{ms: 1, fromVIP: true, flags: "S"}, seg{ms: 2, fromVIP: true, seq: 1, len: 10},
		seg{ms: 3, fromVIP: true, flags: "F", seq: 11})
	if p := clean.ClientView(time.Time{}, 10).Problems(); p != nil {
		t.Errorf("clean connection: %q", p)
	}
	reset := synth(t, seg{ms: 0, flags: "S"}, seg{ms: 1, fromVIP: true, flags: "S"}, seg{ms: 2, fromVIP: true, flags: "R", seq: 1})
	if p := reset.ClientView(time.Time{}, 0).Problems(); len(p) != 1 || !strings.Contains(p[0], "1 RSTs") {
		t.Errorf("reset connection: %q", p)
	}
	// A reset of a connection the capture did not see open belongs to an
	// earlier one, which the new gateway was right to reset.
	earlier := synth(t, seg{ms: 0, flags: "S"}, seg{ms: 1, fromVIP: true, flags: "S"}, seg{ms: 2, fromVIP: true, seq: 1, len: 10},
		seg{ms: 3, fromVIP: true, flags: "R", seq: 7, port: 39999}, seg{ms: 4, fromVIP: true, flags: "F", seq: 11})
	if p := earlier.ClientView(time.Time{}, 10).Problems(); p != nil {
		t.Errorf("reset of an earlier connection: %q", p)
	}
	if p := (Packets{}).ClientView(time.Time{}, 0).Problems(); len(p) != 1 || !strings.Contains(p[0], "no segments") {
		t.Errorf("empty capture: %q", p)
	}
}

func TestAllCurlStats(t *testing.T) {
	stderr := "\n" + `{"http_code":200,"num_connects":1,"time_total":0.5}` + "\n" +
		"curl: (56) Recv failure: Connection reset by peer\n" +
		"\n" + `{"http_code":0,"num_connects":0,"time_total":1.25}` + "\n"
	stats, msgs := allCurlStats(stderr)
	if len(stats) != 2 || stats[0].NumConnects != 1 || stats[1].TimeTotal != 1.25 {
		t.Errorf("stats %+v", stats)
	}
	if msgs != "curl: (56) Recv failure: Connection reset by peer" {
		t.Errorf("messages %q", msgs)
	}
}

func TestParseReceipts(t *testing.T) {
	line := `{"seq":2,"from":"a","to":"b","amount":5,"memo_sha256":"ab"}`
	tests := []struct {
		name    string
		data    string
		want    []Receipt
		wantErr bool
	}{
		{"empty", "", nil, false},
		{"one", line + "\n", []Receipt{{Seq: 2, From: "a", To: "b", Amount: 5, MemoSHA256: "ab", Raw: line}}, false},
		{"not a whole line", line, nil, true},
		{"unknown field", `{"seq":1,"extra":1}` + "\n", nil, true},
		{"not JSON", "seq 1\n", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseReceipts([]byte(tc.data))
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want error %v", err, tc.wantErr)
			}
			if !tc.wantErr && (len(got) != len(tc.want) || (len(got) > 0 && got[0] != tc.want[0])) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestServerState(t *testing.T) {
	st := map[string]any{"servers": []any{
		map[string]any{"name": "primary", "addr": PrimaryIP, "role": "failed", "health": "down"},
		map[string]any{"name": "backup", "addr": BackupIP, "role": "active", "health": "up"},
	}}
	tests := []struct {
		st         map[string]any
		s          Server
		role, heal string
	}{
		{st, Pri, "failed", "down"},
		{st, Bak, "active", "up"},
		{map[string]any{"servers": []any{map[string]any{"name": "backup", "role": "standby"}}}, Bak, "standby", ""},
		{map[string]any{}, Pri, "", ""},
	}
	for _, tc := range tests {
		if r, h := ServerState(tc.st, tc.s); r != tc.role || h != tc.heal {
			t.Errorf("ServerState(%v, %s) = %q, %q; want %q, %q", tc.st, tc.s, r, h, tc.role, tc.heal)
		}
	}
	if LastFailover(map[string]any{}) != nil {
		t.Error("LastFailover of a status without one is not nil")
	}
}

func TestFaultString(t *testing.T) {
	var names []string
	for _, f := range Faults {
		names = append(names, f.String())
	}
	if got := strings.Join(names, " "); got != "host-loss crash hang" {
		t.Errorf("fault names %q", got)
	}
}

// TestHarnessFailoverTools checks the failover helpers on the real testbed
// (root) with the host-kernel DNAT reference in place of the gateway: the
// transaction service, per-server content, background transfers, the
// stall measurement and the truncation checks.
func TestHarnessFailoverTools(t *testing.T) {
	b := Up(t, Options{Kernel: true})
	if !b.Nginx {
		t.Fatal("nginx is not installed: apt-get install -y nginx-light (CI installs it)")
	}

	t.Run("transfer and ledger", func(t *testing.T) {
		b := b.For(t)
		memo := strings.Repeat("x", 3<<20)
		var receipts []Receipt
		for i := range 2 {
			r, tr, err := b.Transfer(TransferRequest{From: "alice", To: "bob", Amount: int64(10 + i), Memo: memo})
			if err != nil {
				t.Fatal(err)
			}
			if r.Seq != int64(i+1) || tr.NumConnects != 1 || r.MemoSHA256 != sha256Hex([]byte(memo)) {
				t.Fatalf("receipt %+v over %d connections", r, tr.NumConnects)
			}
			receipts = append(receipts, *r)
		}
		if got := b.Ledger(Pri); len(got) != 2 || got[0] != receipts[0] || got[1] != receipts[1] {
			t.Errorf("primary's ledger %+v, want %+v", got, receipts)
		}
		if got := b.Ledger(Bak); len(got) != 0 {
			t.Errorf("backup's ledger %+v, want none (DNAT to the primary only)", got)
		}
		var body bytes.Buffer
		if _, err := b.DownloadAll(&body, []string{"/ledger"}); err != nil {
			t.Fatal(err)
		}
		if want := receipts[0].Raw + "\n" + receipts[1].Raw + "\n"; body.String() != want {
			t.Errorf("GET /ledger %q, want %q", body.String(), want)
		}
		// A restarted server numbers on from its ledger.
		b.RestartServer(Pri)
		if r, _, err := b.Transfer(TransferRequest{From: "a", To: "b", Amount: 1}); err != nil || r.Seq != 3 {
			t.Errorf("after a restart: receipt %+v, %v; want seq 3", r, err)
		}
	})

	t.Run("own content differs in length", func(t *testing.T) {
		b := b.For(t)
		for _, s := range []Server{Pri, Bak} {
			want, err := os.ReadFile(b.OwnFile(s, "diverge.bin"))
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			if _, err := b.DownloadAll(&got, []string{"http://" + s.IP() + "/own/diverge.bin"}); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("%s's /own/diverge.bin: %d bytes, want its own %d", s, got.Len(), len(want))
			}
		}
		pri, _ := os.ReadFile(b.OwnFile(Pri, "diverge.bin"))
		bak, _ := os.ReadFile(b.OwnFile(Bak, "diverge.bin"))
		if len(pri) == len(bak) || !bytes.HasPrefix(bak, pri) {
			t.Errorf("diverge.bin: primary %d bytes, backup %d; want different lengths, a common prefix", len(pri), len(bak))
		}
	})

	t.Run("keep-alive with a pause", func(t *testing.T) {
		b := b.For(t)
		start := time.Now()
		tr, err := b.DownloadAll(nil, []string{"/1k.bin", "/index.html"}, "--rate", "2/s")
		if err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); tr.NumConnects != 1 || tr.SHA256 != b.ContentSHA256("1k.bin", "index.html") ||
			took < 400*time.Millisecond {
			t.Errorf("two requests in %v: %+v, want one connection, the files' sha256 and the pause", took, tr)
		}
	})

	t.Run("stall of a hung server is measured", func(t *testing.T) {
		b := b.For(t)
		capture := b.StartTcpdump(b.Client(), "eth0", "tcp and host "+VIP)
		run := b.Background(func() (*Transfer, error) { return b.Download("/big.bin", "--limit-rate", "40M") })
		time.Sleep(500 * time.Millisecond)
		// Longer than the socket buffers on the way take to drain, which
		// shorten the gap the client sees.
		b.StopServer(Pri)
		time.Sleep(800 * time.Millisecond)
		b.ContServer(Pri)
		if run.Done() {
			t.Fatal("the download ended before the pause: rate limit too high")
		}
		tr, err := run.Wait()
		if err != nil || tr.SHA256 != b.SHA256("big.bin") {
			t.Fatalf("download: %+v, %v", tr, err)
		}
		v := capture.Stop().ClientView(time.Time{}, 64<<20)
		if p := v.Problems(); p != nil {
			t.Errorf("a clean transfer: %q", p)
		}
		if v.Stall.Gap < 300*time.Millisecond || v.Stall.Gap > 2*time.Second {
			t.Errorf("stall %v, want most of the 800ms pause", v.Stall)
		}
		t.Logf("stall %v", v.Stall)
	})

	t.Run("crash mid-download is seen", func(t *testing.T) {
		b := b.For(t)
		capture := b.StartTcpdump(b.Client(), "eth0", "tcp and host "+VIP)
		run := b.Background(func() (*Transfer, error) {
			return b.Download("/big.bin", "--limit-rate", "40M", "--max-time", "5")
		})
		time.Sleep(500 * time.Millisecond)
		in := b.Inject(Crash, Pri)
		tr, err := run.Wait()
		if err == nil {
			t.Fatalf("download survived a crash with no gateway: %+v", tr)
		}
		v := capture.Stop().ClientView(time.Time{}, 64<<20)
		if len(v.RSTs)+len(v.EarlyFINs) == 0 {
			t.Errorf("the capture shows neither a RST nor an early FIN after the crash:\n%q", v.Problems())
		}
		t.Logf("curl: %v; client view: %d RSTs, %d early FINs", err, len(v.RSTs), len(v.EarlyFINs))
		in.Repair()
		if _, err := b.Download("/1k.bin"); err != nil {
			t.Errorf("after the repair: %v", err)
		}
	})

	t.Run("faults and repairs", func(t *testing.T) {
		b := b.For(t)
		for _, f := range Faults {
			in := b.Inject(f, Bak)
			if err := b.WaitHTTP(Bak, 300*time.Millisecond); err == nil {
				t.Errorf("%s: the backup still answers", f)
			}
			in.Repair()
			if err := b.WaitHTTP(Bak, time.Second); err != nil {
				t.Errorf("%s repaired: %v", f, err)
			}
		}
	})
}

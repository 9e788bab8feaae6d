package testbed

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Parser tests: no privileges needed.

func TestParseWrk(t *testing.T) {
	tests := []struct {
		name string
		out  string
		want WrkResult
	}{
		{
			name: "clean",
			out: `Running 3s test @ http://10.77.0.100/1k.bin
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   310.12us  120.00us   5.00ms   90.00%
    Req/Sec    12.50k     1.00k   14.00k    70.00%
  74612 requests in 3.00s, 92.18MB read
Requests/sec:  24870.67
Transfer/sec:     30.73MB
`,
			want: WrkResult{Requests: 74612, Duration: 3 * time.Second, RequestsPerS: 24870.67},
		},
		{
			name: "errors",
			out: `  1200 requests in 1.00m, 1.00MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 5
Requests/sec:     20.00
`,
			want: WrkResult{Requests: 1200, Duration: time.Minute, RequestsPerS: 20,
				SocketErrors: SocketErrors{Connect: 1, Read: 2, Write: 3, Timeout: 4}, Non2xx: 5},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseWrk(tc.out)
			if err != nil {
				t.Fatal(err)
			}
			got.Output = ""
			if *got != tc.want {
				t.Errorf("got %+v, want %+v", *got, tc.want)
			}
		})
	}
	if _, err := parseWrk("unable to connect to 10.77.0.100:80 Connection refused\n"); err == nil {
		t.Error("output without a request count parsed without error")
	}
}

func TestParseNstat(t *testing.T) {
	out := `#kernel
IpInReceives                    1234               0.0
TcpExtTSEcrRejected             0                  0.0
TcpActiveOpens                  18446744073709551615 0.0
`
	got, err := parseNstat(out)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{"IpInReceives": 1234, "TcpExtTSEcrRejected": 0, "TcpActiveOpens": 1<<64 - 1}
	if len(got) != len(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d", k, got[k], v)
		}
	}
	for _, bad := range []string{"", "#kernel\n", "IpInReceives x 0.0\n"} {
		if _, err := parseNstat(bad); err == nil {
			t.Errorf("parseNstat(%q): no error", bad)
		}
	}
}

func TestParseAccess(t *testing.T) {
	tests := []struct {
		line    string
		want    AccessEntry
		wantErr bool
	}{
		{line: "10.77.1.2 GET 200 67108864 85 3 1 0.191 /big.bin",
			want: AccessEntry{Remote: "10.77.1.2", Method: "GET", Status: 200, BodyBytes: 67108864, RequestLength: 85,
				Connection: 3, ConnRequests: 1, RequestTime: 191 * time.Millisecond, URI: "/big.bin"}},
		{line: "10.77.1.2 GET 404 0 90 7 12 0.000 /a file",
			want: AccessEntry{Remote: "10.77.1.2", Method: "GET", Status: 404, RequestLength: 90,
				Connection: 7, ConnRequests: 12, URI: "/a file"}},
		{line: "10.77.1.2 GET 200", wantErr: true},
		{line: "10.77.1.2 GET ok 0 90 7 12 0.000 /", wantErr: true},
	}
	for _, tc := range tests {
		got, err := parseAccess(tc.line)
		if (err != nil) != tc.wantErr {
			t.Errorf("parseAccess(%q): error %v, want error %v", tc.line, err, tc.wantErr)
			continue
		}
		if got != tc.want {
			t.Errorf("parseAccess(%q) = %+v, want %+v", tc.line, got, tc.want)
		}
	}
}

func TestParseUploads(t *testing.T) {
	lines := []string{
		"req 127.0.0.1 GET 200 84 0 1 1 0.000 /index.html",
		"upload 1024 abcd",
		"upload-incomplete 1000 unexpected EOF",
		"transfer 8 ef01",
	}
	got, err := parseUploads(lines)
	if err != nil {
		t.Fatal(err)
	}
	want := []UploadEntry{{"upload", 1024, "abcd"}, {"transfer", 8, "ef01"}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestParseCurlStats(t *testing.T) {
	stderr := "curl: (18) transfer closed with 10 bytes remaining to read\n" +
		`{"http_code":200,"num_connects":1,"size_download":90,"time_total":1.5,"exitcode":18}` + "\n"
	st, msgs, err := parseCurlStats(stderr)
	if err != nil {
		t.Fatal(err)
	}
	if st.HTTPCode != 200 || st.NumConnects != 1 || st.SizeDownload != 90 || st.TimeTotal != 1.5 || st.ExitCode != 18 {
		t.Errorf("stats %+v", st)
	}
	if !strings.Contains(msgs, "transfer closed") {
		t.Errorf("messages %q", msgs)
	}
	if _, _, err := parseCurlStats("curl: (6) nope\n"); err == nil {
		t.Error("no error without a statistics line")
	}
}

// TestPackets writes a pcap like tcpdump's and checks the client-side filters.
func TestPackets(t *testing.T) {
	frame := func(src, dst string, l ...gopacket.SerializableLayer) []byte {
		eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
			EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, TTL: 64, SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst), Protocol: layers.IPProtocolTCP}
		if _, ok := l[0].(*layers.ICMPv4); ok {
			ip.Protocol = layers.IPProtocolICMPv4
		}
		if tcp, ok := l[0].(*layers.TCP); ok {
			_ = tcp.SetNetworkLayerForChecksum(ip)
		}
		buf := gopacket.NewSerializeBuffer()
		all := append([]gopacket.SerializableLayer{eth, ip}, l...)
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, all...); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	frames := [][]byte{
		frame(ClientIP, VIP, &layers.TCP{SrcPort: 40000, DstPort: 80, SYN: true, Window: 100}),
		frame(VIP, ClientIP, &layers.TCP{SrcPort: 80, DstPort: 40000, SYN: true, ACK: true, Window: 100}),
		frame(VIP, ClientIP, &layers.TCP{SrcPort: 80, DstPort: 40000, RST: true, ACK: true}),
		frame(ClientIP, VIP, &layers.TCP{SrcPort: 40000, DstPort: 80, RST: true}),
		frame(GatewayClientIP, ClientIP, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 1)},
			gopacket.Payload(make([]byte, 28))),
		frame(ClientIP, GatewayClientIP, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0)}),
	}
	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	if err := w.WriteFileHeader(snaplen, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		ci := gopacket.CaptureInfo{Timestamp: time.Unix(1, 0), CaptureLength: len(f), Length: len(f)}
		if err := w.WritePacket(ci, f); err != nil {
			t.Fatal(err)
		}
	}
	// A record cut short, as when tcpdump is stopped mid-write.
	data := append(buf.Bytes(), 1, 2, 3)
	pkts, err := readPcap(data)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name string
		got  Packets
		want int
	}{
		{"all", pkts, 6},
		{"tcp", pkts.TCP(), 4},
		{"to client", pkts.To(ClientIP), 3},
		{"from client", pkts.From(ClientIP), 3},
		{"rsts", pkts.RSTs(), 2},
		{"client rsts", pkts.ClientRSTs(), 1},
		{"icmp errors", pkts.ICMPErrors(), 1},
		{"client icmp errors", pkts.ClientICMPErrors(), 1},
	}
	for _, c := range checks {
		if len(c.got) != c.want {
			t.Errorf("%s: %d packets, want %d:\n%s", c.name, len(c.got), c.want, c.got)
		}
	}
	if s := pkts.ClientRSTs().String(); !strings.Contains(s, "10.77.0.100:80 > 10.77.1.2:40000 [R.]") {
		t.Errorf("summary %q", s)
	}
}

// Harness self-tests on the real testbed (root). The host-kernel DNAT
// reference stands in for the gateway, so these prove the harness alone.

func TestHarnessKernelReference(t *testing.T) {
	b := Up(t, Options{Kernel: true})
	// Handshakes, teardowns and resets only: keep-alive bulk traffic would
	// make the capture large without telling anything more.
	capture := b.StartTcpdump(b.Client(), "eth0", "icmp or tcp[tcpflags] & (tcp-syn|tcp-fin|tcp-rst) != 0")
	before := b.Nstat(b.Client())

	t.Run("download", func(t *testing.T) {
		tr, err := b.Download("/big.bin")
		if err != nil {
			t.Fatal(err)
		}
		if tr.SHA256 != b.SHA256("big.bin") || tr.Bytes != 64<<20 {
			t.Errorf("big.bin: %d bytes sha256 %s, want %d bytes %s", tr.Bytes, tr.SHA256, 64<<20, b.SHA256("big.bin"))
		}
		if tr.HTTPCode != 200 || tr.NumConnects != 1 || tr.TimeTotal <= 0 {
			t.Errorf("stats: %+v", tr)
		}
		var found bool
		for _, e := range b.AccessLog(Pri) {
			found = found || (e.Remote == ClientIP && e.URI == "/big.bin" && e.Status == 200 && e.BodyBytes == 64<<20)
		}
		if !found {
			t.Errorf("primary's access log has no whole GET /big.bin from the client: %+v", b.AccessLog(Pri))
		}
	})

	t.Run("upload", func(t *testing.T) {
		const size = 16 << 20
		tr, err := b.Upload("/upload", size)
		if err != nil {
			t.Fatal(err)
		}
		if tr.Bytes != size || tr.Reply == nil || tr.Reply.Bytes != size || tr.Reply.SHA256 != tr.SHA256 {
			t.Fatalf("upload: sent %d bytes sha256 %s, reply %+v", tr.Bytes, tr.SHA256, tr.Reply)
		}
		want := UploadEntry{Kind: "upload", Bytes: size, SHA256: tr.SHA256}
		if got := b.WaitUploadLog(Pri, 1, time.Second); len(got) != 1 || got[0] != want {
			t.Errorf("primary's upload log %+v, want [%+v]", got, want)
		}
		if got := b.UploadLog(Bak); len(got) != 0 {
			t.Errorf("backup's upload log %+v, want none (the kernel reference DNATs to the primary only)", got)
		}
	})

	t.Run("wrk", func(t *testing.T) {
		r, err := b.Wrk(8, 3*time.Second, "/1k.bin")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("wrk: %d requests, %.0f/s", r.Requests, r.RequestsPerS)
		if r.Requests == 0 || r.SocketErrors.Total() != 0 || r.Non2xx != 0 {
			t.Errorf("wrk: %+v\n%s", r, r.Output)
		}
	})

	pkts := capture.Stop()
	if len(pkts.TCP()) == 0 {
		t.Error("the capture saw no TCP handshakes")
	}
	if rsts := pkts.ClientRSTs(); len(rsts) != 0 {
		t.Errorf("the client received %d RSTs:\n%s", len(rsts), rsts)
	}
	if icmp := pkts.ClientICMPErrors(); len(icmp) != 0 {
		t.Errorf("the client received %d ICMP errors:\n%s", len(icmp), icmp)
	}
	if capture.Dropped != 0 {
		t.Errorf("tcpdump dropped %d packets", capture.Dropped)
	}

	after := b.Nstat(b.Client())
	if opens := after["TcpActiveOpens"] - before["TcpActiveOpens"]; opens < 10 {
		t.Errorf("client TcpActiveOpens grew by %d, want at least 10", opens)
	}
	if _, ok := after["TcpExtTSEcrRejected"]; !ok {
		t.Error("nstat has no TcpExtTSEcrRejected")
	}
}

// TestHarnessFaults checks the fault-injection helpers on the backup, which
// the client reaches directly through the gateway host's routing.
func TestHarnessFaults(t *testing.T) {
	b := Up(t, Options{Kernel: true})

	// The capture must see what the integration tests assert is absent: a
	// RST (closed port on the primary) and an ICMP error (the gateway host
	// has no route to 10.77.3.1).
	capture := b.StartTcpdump(b.Client(), "eth0", "")
	if _, err := b.Download("http://" + PrimaryIP + ":81/"); err == nil {
		t.Error("GET from a closed port succeeded")
	}
	if _, err := b.Download("http://10.77.3.1/", "--max-time", "1"); err == nil {
		t.Error("GET from an unroutable address succeeded")
	}
	pkts := capture.Stop()
	if n := len(pkts.ClientRSTs()); n != 1 {
		t.Errorf("client RSTs: %d, want 1:\n%s", n, pkts)
	}
	if n := len(pkts.ClientICMPErrors()); n == 0 {
		t.Errorf("no ICMP error to the client:\n%s", pkts)
	}

	url := "http://" + BackupIP + "/index.html"
	get := func(wantOK bool) error {
		// Generous when success is expected: the machine may be busy.
		maxTime := map[bool]string{true: "5", false: "0.5"}[wantOK]
		_, err := b.Download(url, "--max-time", maxTime)
		return err
	}
	steps := []struct {
		name   string
		do     func()
		wantOK bool
	}{
		{"healthy", func() {}, true},
		{"link down", func() { b.LinkDown(Bak) }, false},
		{"link up", func() { b.LinkUp(Bak) }, true},
		{"stopped", func() { b.StopServer(Bak) }, false},
		{"continued", func() { b.ContServer(Bak) }, true},
		{"killed", func() { b.KillServer(Bak) }, false},
		{"restarted", func() { b.RestartServer(Bak) }, true},
		{"lossy", func() { b.Loss(b.Backup(), 1) }, false},
		{"loss off", func() { b.Loss(b.Backup(), 0) }, true},
	}
	for _, s := range steps {
		s.do()
		if err := get(s.wantOK); (err == nil) != s.wantOK {
			t.Fatalf("%s: GET %s: error %v, want success %v", s.name, url, err, s.wantOK)
		}
	}
	// The primary and the VIP were never touched.
	if _, err := b.Download("/index.html"); err != nil {
		t.Error(err)
	}

	// Resized for 20000 connections, each nginx runs two workers and both
	// servers answer again.
	if err := b.Resize(20000); err != nil {
		t.Fatal(err)
	}
	for _, s := range []Server{Pri, Bak} {
		if n := nginxWorkers(t, b, s); b.Nginx && n != 2 {
			t.Errorf("server %s: %d nginx workers after Resize(20000), want 2", s, n)
		}
	}
	for _, u := range []string{"/index.html", url} {
		if _, err := b.Download(u, "--max-time", "5"); err != nil {
			t.Errorf("after Resize: %v", err)
		}
	}
}

// nginxWorkers counts the nginx worker processes in server s's namespace.
func nginxWorkers(t *testing.T, b *Bed, s Server) int {
	t.Helper()
	out, err := exec.Command("ip", "netns", "pids", b.NS(s)).Output()
	if err != nil {
		t.Fatalf("ip netns pids %s: %v", b.NS(s), err)
	}
	n := 0
	for _, pid := range strings.Fields(string(out)) {
		cmdline, _ := os.ReadFile("/proc/" + pid + "/cmdline")
		if strings.HasPrefix(string(cmdline), "nginx: worker process") {
			n++
		}
	}
	return n
}

// TestHarnessUswebOnly checks the fallback where usweb serves everything.
func TestHarnessUswebOnly(t *testing.T) {
	b := Up(t, Options{Kernel: true, NoNginx: true})
	if b.Nginx {
		t.Fatal("nginx serves despite NoNginx")
	}
	tr, err := b.Download("/1k.bin")
	if err != nil || tr.SHA256 != b.SHA256("1k.bin") {
		t.Fatalf("1k.bin: %+v, %v", tr, err)
	}
	up, err := b.Upload("/upload", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.UploadLog(Pri); len(got) != 1 || got[0].SHA256 != up.SHA256 {
		t.Errorf("upload log %+v, want sha256 %s", got, up.SHA256)
	}
	var found bool
	for _, e := range b.AccessLog(Pri) {
		found = found || (e.Remote == ClientIP && e.URI == "/1k.bin" && e.BodyBytes == 1024)
	}
	if !found {
		t.Errorf("usweb's access entries have no GET /1k.bin: %+v", b.AccessLog(Pri))
	}
}

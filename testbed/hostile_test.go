package testbed

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Hostile-network integration tests (root): crafted bad input, a SYN flood,
// the gateway's own restart and isolation. Each judges the client's view of
// a download running meanwhile (sha256, one connection, no reset) and the
// gateway's own account (drops by reason in its status).

// hostileArgs probe at a pace the tests' own floods cannot mistake for a
// failure: the point is what the datapath does, not detection.
var hostileArgs = []string{"--probe-interval", "100ms", "--probe-timeout", "100ms", "--probe-misses", "5"}

var (
	vipPort  = netip.AddrPortFrom(netip.MustParseAddr(VIP), Port)
	clientIP = netip.MustParseAddr(ClientIP)
)

// hostileDownload starts a rate-limited download of big.bin from a fixed
// client port, so that blind segments can be aimed at its connection.
func hostileDownload(b *Bed, port uint16) *Running {
	return b.Background(func() (*Transfer, error) {
		return b.Download("/big.bin", "--limit-rate", "16M", "--local-port", strconv.Itoa(int(port)), "--max-time", "60")
	})
}

// checkDownload fails t unless the download got big.bin whole on one connection.
func checkDownload(t *testing.T, b *Bed, run *Running) {
	t.Helper()
	tr, err := run.Wait()
	if err != nil {
		t.Fatalf("download: %v", err)
	}
	if tr.SHA256 != b.SHA256("big.bin") || tr.Bytes != 64<<20 || tr.NumConnects != 1 {
		t.Fatalf("big.bin: %d bytes sha256 %s over %d connections; want %d bytes %s over 1",
			tr.Bytes, tr.SHA256, tr.NumConnects, 64<<20, b.SHA256("big.bin"))
	}
}

// observeClient waits for the client's next ACK on port and returns it.
func observeClient(t *testing.T, b *Bed, port uint16) *layers.TCP {
	t.Helper()
	_, tcp, err := b.Observe(b.Client(), "eth0", 10*time.Second, func(ip *layers.IPv4, tcp *layers.TCP) bool {
		return ip.SrcIP.String() == ClientIP && uint16(tcp.SrcPort) == port && tcp.ACK && !tcp.SYN && !tcp.RST
	})
	if err != nil {
		t.Fatal(err)
	}
	return tcp
}

// rstsTo are the resets in ps that reached the client's port.
func rstsTo(ps Packets, port uint16) Packets {
	return ps.ClientRSTs().Filter(func(p gopacket.Packet) bool {
		tcp := TCP(p)
		return tcp != nil && uint16(tcp.DstPort) == port
	})
}

// TestHostileInput: every class of bad input the generator crafts, sent
// many times while a download runs through the VIP. The download completes
// whole on its one connection with no reset, the gateway stays up, and each
// input is counted under its drop reason, exactly.
func TestHostileInput(t *testing.T) {
	b := Up(t, Options{})
	RequireTool(t, "tcpdump")
	gw := b.StartGateway(hostileArgs...)
	const port, strayPort = 45123, 45124
	capture := b.StartTcpdump(b.Client(), "eth0", "tcp[tcpflags] & tcp-rst != 0")
	in := b.ClientInjector()
	run := hostileDownload(b, port)

	inputs := in.BadFrames(netip.AddrPortFrom(clientIP, strayPort), vipPort)
	inputs = append(inputs, in.BadSegments(netip.AddrPortFrom(clientIP, strayPort+1), vipPort)...)
	st := gatewayStatus(t, b)
	before, beforeRing := st.Drops, st.KernelBypass.RingDrops
	// The blind segments are built from the connection's numbers of the
	// moment, and sent at once: the zero-window probe's ack must not lag.
	live := observeClient(t, b, port)
	blind := in.Blind(netip.AddrPortFrom(clientIP, port), vipPort, live.Seq, live.Ack, live.Window)
	const reps = 25
	want := map[string]uint64{}
	send := func(x BadInput) {
		for range reps {
			if err := in.Send(x.Frame); err != nil {
				t.Fatalf("%s: %v", x.Name, err)
			}
			// Paced: the point is the datapath's judgement, not its ring.
			time.Sleep(200 * time.Microsecond)
		}
		if x.Drop != "" {
			want[x.Drop] += reps
		}
	}
	for _, x := range blind {
		send(x)
	}
	for _, x := range inputs {
		send(x)
	}
	checkDownload(t, b, run)
	if gw.Exited() {
		t.Fatalf("gateway exited: %v", gw.Wait())
	}
	after := gatewayStatus(t, b)
	var lines []string
	for _, x := range append(blind, inputs...) {
		lines = append(lines, fmt.Sprintf("%-40s -> %s", x.Name, orDash(x.Drop)))
	}
	t.Logf("%d inputs × %d each:\n%s", len(blind)+len(inputs), reps, strings.Join(lines, "\n"))
	// Frames the kernel dropped on a full ring (a loaded host) never reach
	// the count: that many may be missing, no more.
	lost := after.KernelBypass.RingDrops - beforeRing
	if lost > 0 {
		t.Logf("%d frames lost to full rings", lost)
	}
	for reason, n := range want {
		got := after.Drops[reason] - before[reason]
		// A stray's reset from the gateway makes the client's kernel say
		// nothing; other traffic never has no flow: but a stray ACK of the
		// download's own last moments may, so no_flow is a lower bound.
		if got > n && reason != "no_flow" || got+lost < n {
			t.Errorf("drops %q: %d more, want %d", reason, got, n)
		}
	}
	if rsts := rstsTo(capture.Stop(), port); len(rsts) > 0 {
		t.Errorf("the download's connection received resets:\n%s", rsts)
	}
}

func orDash(s string) string {
	if s == "" {
		return "(valid: forwarded)"
	}
	return s
}

// floodSYNs is the size of the SYN flood: bounded, sent at full speed.
const floodSYNs = 200_000

// floodHalfOpenCap is the gateway's half-open cap during the flood.
const floodHalfOpenCap = 16384

// floodRSSGrowth is the most the gateway's resident set may grow during the
// flood: the half-open cap bounds the flows it holds (16384 at well under
// 1 KiB each; 15–18 MiB of growth was seen).
const floodRSSGrowth = 64 << 20

// TestSynFlood: 200k SYNs at full speed from random addresses and ports of
// the client subnet while two downloads run through the VIP. The downloads
// complete whole with no reset, a new client's request during the flood and
// one after it succeed, the half-open count never passes its cap, and the
// gateway's RSS grows by less than floodRSSGrowth.
func TestSynFlood(t *testing.T) {
	b := Up(t, Options{})
	RequireTool(t, "tcpdump")
	// A cap the flood certainly reaches, so that eviction is what lets the
	// new clients in.
	gw := b.StartGateway(append([]string{"--max-half-open", strconv.Itoa(floodHalfOpenCap)}, hostileArgs...)...)
	pid := gw.Cmd.Process.Pid
	rssStart := rss(t, pid)
	capture := b.StartTcpdump(b.Client(), "eth0", "tcp[tcpflags] & tcp-rst != 0 and src host "+VIP)
	in := b.ClientInjector()
	const port1, port2 = 45201, 45202
	runs := []*Running{hostileDownload(b, port1), hostileDownload(b, port2)}
	time.Sleep(500 * time.Millisecond)
	before := gatewayStatus(t, b)

	// Watch the half-open count and the RSS while the flood lasts.
	type peak struct {
		halfOpen, cap int
		rss           int64
	}
	stop := make(chan struct{})
	peaks := make(chan peak, 1)
	go func() {
		var p peak
		defer func() { peaks <- p }()
		for {
			if st, err := b.StatusJSON(); err == nil {
				var s struct {
					Flows struct {
						HalfOpen    int `json:"half_open"`
						HalfOpenCap int `json:"half_open_cap"`
					} `json:"flows"`
				}
				if json.Unmarshal(st, &s) == nil {
					p.halfOpen, p.cap = max(p.halfOpen, s.Flows.HalfOpen), s.Flows.HalfOpenCap
				}
			}
			if n, err := RSS(pid); err == nil {
				p.rss = max(p.rss, n)
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()

	type result struct {
		sent int
		took time.Duration
		err  error
	}
	flood := make(chan result, 1)
	go func() {
		n, d, err := in.SynFlood(floodSYNs, netip.MustParsePrefix(ClientIP+"/24"), vipPort,
			clientIP, netip.MustParseAddr(GatewayClientIP))
		flood <- result{n, d, err}
	}()
	// A new client while the flood runs.
	during := b.Background(func() (*Transfer, error) { return b.Download("/index.html", "--max-time", "20") })
	fr := <-flood
	if fr.err != nil {
		t.Fatalf("flood: %v after %d SYNs", fr.err, fr.sent)
	}
	for _, r := range runs {
		checkDownload(t, b, r)
	}
	for _, tr := range []*Running{during, b.Background(func() (*Transfer, error) {
		return b.Download("/index.html", "--max-time", "20")
	})} {
		res, err := tr.Wait()
		switch {
		case err != nil:
			t.Errorf("a new client during or after the flood: %v", err)
		case res.SHA256 != b.SHA256("index.html"):
			t.Errorf("index.html: sha256 %s", res.SHA256)
		default:
			t.Logf("new client: index.html in %v", res.TimeTotal)
		}
	}
	close(stop)
	p := <-peaks
	after := gatewayStatus(t, b)
	if gw.Exited() {
		t.Fatalf("gateway exited: %v", gw.Wait())
	}
	ev := func(name string) uint64 { return after.Packets.Events[name] - before.Packets.Events[name] }
	t.Logf("flood: %d SYNs in %v (%.0f/s); gateway: %d client segments, %d flows created, %d half-open evicted, "+
		"%d refused at the cap, %d frames lost to full rings; half-open peak %d (cap %d); RSS %d KiB before, %d KiB peak",
		fr.sent, fr.took.Round(time.Millisecond), float64(fr.sent)/fr.took.Seconds(), ev("client_segments"),
		ev("flows_created"), ev("half_open_evicted"), after.Drops["half_open_cap"]-before.Drops["half_open_cap"],
		after.KernelBypass.RingDrops-before.KernelBypass.RingDrops, p.halfOpen, p.cap, rssStart>>10, p.rss>>10)
	if p.cap == 0 || p.halfOpen > p.cap || after.Flows.HalfOpen > after.Flows.HalfOpenCap {
		t.Errorf("half-open flows peaked at %d (now %d), cap %d", p.halfOpen, after.Flows.HalfOpen, p.cap)
	}
	if p.rss-rssStart > floodRSSGrowth {
		t.Errorf("gateway RSS grew from %d KiB to %d KiB, bound +%d KiB", rssStart>>10, p.rss>>10, floodRSSGrowth>>10)
	}
	if ev("half_open_evicted")+after.Drops["half_open_cap"]-before.Drops["half_open_cap"] == 0 {
		t.Error("the flood never reached the half-open cap: nothing was evicted or refused")
	}
	if rsts := capture.Stop().ClientRSTs().Filter(func(p gopacket.Packet) bool {
		tcp := TCP(p)
		return tcp != nil && (tcp.DstPort == port1 || tcp.DstPort == port2)
	}); len(rsts) > 0 {
		t.Errorf("the downloads' connections received resets:\n%s", rsts)
	}
}

// rss is the resident set of process pid in bytes.
func rss(t *testing.T, pid int) int64 {
	t.Helper()
	n, err := RSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

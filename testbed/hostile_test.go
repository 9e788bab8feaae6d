package testbed

import (
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
	before := gatewayStatus(t, b).Drops
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
	for reason, n := range want {
		got := after.Drops[reason] - before[reason]
		// A stray's reset from the gateway makes the client's kernel say
		// nothing; other traffic never has no flow: but a stray ACK of the
		// download's own last moments may, so no_flow is a lower bound.
		if got != n && !(reason == "no_flow" && got > n) {
			t.Errorf("drops %q: %d more, want %d", reason, got, n)
		}
	}
	if after.KernelBypass.RingDrops != 0 {
		t.Errorf("%d frames lost to full rings: counts cannot be exact", after.KernelBypass.RingDrops)
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

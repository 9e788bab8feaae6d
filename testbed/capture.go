package testbed

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Capture is a running tcpdump.
type Capture struct {
	b        *Bed
	desc     string
	proc     *Proc
	pcap     bytes.Buffer // tcpdump -w - output, filled until it exits
	copyDone chan struct{}

	mu     sync.Mutex
	stderr strings.Builder

	// Dropped is the kernel's drop count tcpdump reported at exit.
	Dropped int
}

// snaplen keeps the headers only: enough for Ethernet, IPv4 and TCP with
// options, or for an ICMP error quoting such headers.
const snaplen = 256

// StartTcpdump captures on iface in namespace ns with a pcap filter (may be
// empty) and returns once tcpdump is listening. Stop returns the packets.
func (b *Bed) StartTcpdump(ns, iface, filter string) *Capture {
	b.t.Helper()
	RequireTool(b.t, "tcpdump")
	// To stdout, not to a file: tcpdump drops privileges and may be confined
	// by AppArmor, so it might not write where the harness wants.
	// A 64 MiB kernel buffer: at a download's 100k+ segments per second a
	// packet-at-a-time tcpdump falls behind, and the packets the kernel
	// drops would read as stalls.
	args := []string{"-i", iface, "-n", "-U", "--immediate-mode", "-B", "65536", "-s", strconv.Itoa(snaplen), "-w", "-"}
	if filter != "" {
		args = append(args, filter)
	}
	cmd := b.Cmd(ns, "tcpdump", args...)
	c := &Capture{b: b, desc: fmt.Sprintf("tcpdump in %s on %s", ns, iface), copyDone: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		b.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.t.Fatalf("%s: %v", c.desc, err)
	}
	c.proc = &Proc{Name: "tcpdump", Cmd: cmd, done: make(chan struct{})}
	go func() {
		_, _ = io.Copy(&c.pcap, stdout)
		close(c.copyDone)
	}()
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			c.mu.Lock()
			c.stderr.WriteString(sc.Text() + "\n")
			c.mu.Unlock()
			if strings.Contains(sc.Text(), "listening on") {
				once.Do(func() { close(listening) })
			}
		}
		// Pipes are drained before Wait, as os/exec requires.
		<-c.copyDone
		c.proc.err = cmd.Wait()
		close(c.proc.done)
	}()
	b.t.Cleanup(func() { _ = c.proc.Stop() })

	select {
	case <-listening:
		return c
	case <-c.proc.done:
		b.t.Fatalf("%s exited: %v: %s", c.desc, c.proc.err, c.stderrText())
	case <-time.After(5 * time.Second):
		_ = c.proc.Stop()
		b.t.Fatalf("%s: not listening after 5s: %s", c.desc, c.stderrText())
	}
	return nil
}

func (c *Capture) stderrText() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.TrimSpace(c.stderr.String())
}

var droppedRE = regexp.MustCompile(`(\d+) packets? dropped by kernel`)

// Stop ends the capture and returns the packets, decoded from Ethernet up.
func (c *Capture) Stop() Packets {
	c.b.t.Helper()
	// A moment for frames already on the wire to reach the socket.
	time.Sleep(50 * time.Millisecond)
	_ = c.proc.Cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.proc.done:
	case <-time.After(5 * time.Second):
		_ = c.proc.Stop()
	}
	if m := droppedRE.FindStringSubmatch(c.stderrText()); m != nil {
		c.Dropped, _ = strconv.Atoi(m[1])
	}
	pkts, err := readPcap(c.pcap.Bytes())
	if err != nil {
		c.b.t.Fatalf("%s: %v (%s)", c.desc, err, c.stderrText())
	}
	return pkts
}

func readPcap(data []byte) (Packets, error) {
	r, err := pcapgo.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("reading pcap: %w", err)
	}
	var pkts Packets
	for {
		data, ci, err := r.ReadPacketData()
		if err == io.EOF || err == io.ErrUnexpectedEOF { // a record cut short by the stop
			return pkts, nil
		}
		if err != nil {
			return pkts, fmt.Errorf("reading pcap: %w", err)
		}
		p := gopacket.NewPacket(data, r.LinkType(), gopacket.DecodeOptions{Lazy: true, NoCopy: true})
		md := p.Metadata()
		md.CaptureInfo = ci
		pkts = append(pkts, p)
	}
}

// Packets is a decoded capture with filters for the checks tests make.
type Packets []gopacket.Packet

// Filter keeps the packets for which keep is true.
func (ps Packets) Filter(keep func(gopacket.Packet) bool) Packets {
	var out Packets
	for _, p := range ps {
		if keep(p) {
			out = append(out, p)
		}
	}
	return out
}

func ipv4(p gopacket.Packet) *layers.IPv4 {
	ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	return ip
}

// TCP is the packet's TCP header, or nil.
func TCP(p gopacket.Packet) *layers.TCP {
	tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	return tcp
}

// To keeps IPv4 packets whose destination is addr.
func (ps Packets) To(addr string) Packets {
	a := net.ParseIP(addr)
	return ps.Filter(func(p gopacket.Packet) bool { ip := ipv4(p); return ip != nil && ip.DstIP.Equal(a) })
}

// From keeps IPv4 packets whose source is addr.
func (ps Packets) From(addr string) Packets {
	a := net.ParseIP(addr)
	return ps.Filter(func(p gopacket.Packet) bool { ip := ipv4(p); return ip != nil && ip.SrcIP.Equal(a) })
}

// TCP keeps the TCP segments.
func (ps Packets) TCP() Packets {
	return ps.Filter(func(p gopacket.Packet) bool { return TCP(p) != nil })
}

// RSTs keeps TCP segments with RST set.
func (ps Packets) RSTs() Packets {
	return ps.Filter(func(p gopacket.Packet) bool { tcp := TCP(p); return tcp != nil && tcp.RST })
}

// ICMPErrors keeps ICMPv4 error messages (unreachable, source quench,
// redirect, time exceeded, parameter problem).
func (ps Packets) ICMPErrors() Packets {
	return ps.Filter(func(p gopacket.Packet) bool {
		icmp, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
		if !ok {
			return false
		}
		switch icmp.TypeCode.Type() {
		case layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4TypeSourceQuench, layers.ICMPv4TypeRedirect,
			layers.ICMPv4TypeTimeExceeded, layers.ICMPv4TypeParameterProblem:
			return true
		}
		return false
	})
}

// ClientRSTs are the RSTs the client received.
func (ps Packets) ClientRSTs() Packets { return ps.To(ClientIP).RSTs() }

// ClientICMPErrors are the ICMP errors the client received.
func (ps Packets) ClientICMPErrors() Packets { return ps.To(ClientIP).ICMPErrors() }

// String lists up to 20 packets, one line each, for failure messages.
func (ps Packets) String() string {
	var sb strings.Builder
	for i, p := range ps {
		if i == 20 {
			fmt.Fprintf(&sb, "... and %d more\n", len(ps)-i)
			break
		}
		fmt.Fprintf(&sb, "%s %s\n", p.Metadata().Timestamp.Format("15:04:05.000000"), summary(p))
	}
	return sb.String()
}

func summary(p gopacket.Packet) string {
	ip := ipv4(p)
	if ip == nil {
		return fmt.Sprintf("non-IPv4 frame, %d bytes", p.Metadata().Length)
	}
	if tcp := TCP(p); tcp != nil {
		var flags []string
		for _, f := range []struct {
			on   bool
			name string
		}{{tcp.SYN, "S"}, {tcp.FIN, "F"}, {tcp.RST, "R"}, {tcp.PSH, "P"}, {tcp.ACK, "."}} {
			if f.on {
				flags = append(flags, f.name)
			}
		}
		return fmt.Sprintf("%s:%d > %s:%d [%s] seq %d ack %d win %d len %d", ip.SrcIP, tcp.SrcPort, ip.DstIP, tcp.DstPort,
			strings.Join(flags, ""), tcp.Seq, tcp.Ack, tcp.Window, int(ip.Length)-int(ip.IHL)*4-int(tcp.DataOffset)*4)
	}
	if icmp, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok {
		return fmt.Sprintf("%s > %s ICMP %s", ip.SrcIP, ip.DstIP, icmp.TypeCode)
	}
	return fmt.Sprintf("%s > %s proto %s", ip.SrcIP, ip.DstIP, ip.Protocol)
}

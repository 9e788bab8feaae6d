package failover

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"understudy/capture"
	"understudy/rewrite"
)

// SYNProber sends the server a bare SYN from a raw socket and waits for its
// kernel's answer: a SYN-ACK (a process listens: up), a RST (nothing
// listens: the process is gone) or nothing within Timeout (the host or its
// link is gone). It tells what TCPProber tells, at about half the cost to
// the two hosts: the handshake never completes, so the server's process is
// never woken to accept a connection, the server's kernel keeps only a
// half-open entry until the RST, and the gateway makes no socket per probe.
// The prober answers the SYN-ACK with a RST itself (see reset). A raw TCP
// socket sees no ICMP errors: an unreachable server is a timeout.
//
// The source port is held by a socket bound to it (and never connected),
// so no connection of the host's own can take it. A SYNProber that may not
// open a raw socket (no CAP_NET_RAW) probes by connecting, as TCPProber.
type SYNProber struct {
	Addr    netip.AddrPort
	Timeout time.Duration // 0: DefaultInterval

	mu       sync.Mutex
	opened   bool
	fallback *TCPProber // set when the raw socket could not be opened
	raw      int        // raw TCP socket: sends SYNs, receives the answers (filtered)
	hold     int        // TCP socket bound to the source port
	src      netip.AddrPort
	pkt      rewrite.Packet
	buf      [rewrite.BuildMin]byte // a segment built or received, behind an Ethernet header
}

// Open makes the prober's sockets, if it has none yet. Without the right to
// open a raw socket it falls back to connecting for good and says so; other
// errors (no route to the server yet) are retried by the next probe, which
// fails meanwhile.
func (p *SYNProber) Open() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.openLocked()
}

func (p *SYNProber) openLocked() error {
	if p.opened {
		return nil
	}
	err := p.open()
	switch {
	case err == nil:
		p.opened = true
		return nil
	case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES):
		p.opened = true
		p.fallback = &TCPProber{Addr: p.Addr, Timeout: p.Timeout}
		return fmt.Errorf("raw SYN probes of %v not permitted (CAP_NET_RAW), probing by connecting: %w", p.Addr, err)
	}
	return fmt.Errorf("open raw SYN probe of %v: %w", p.Addr, err)
}

// Kind names how the prober probes: "tcp syn", or "tcp connect" once it
// fell back.
func (p *SYNProber) Kind() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fallback != nil {
		return "tcp connect"
	}
	return "tcp syn"
}

// Probe implements Prober.
func (p *SYNProber) Probe(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.openLocked(); err != nil && p.fallback == nil {
		return &ProbeError{Addr: p.Addr, Op: "open", Err: err}
	}
	if p.fallback != nil {
		return p.fallback.Probe(ctx)
	}
	timeout := budget(ctx, p.Timeout)
	deadline := time.Now().Add(timeout)
	p.drain() // answers that came after an earlier probe gave up
	iss := rand.Uint32()
	if err := p.send(iss, 0, rewrite.SYN); err != nil {
		// The route or the address it left from may have changed: the
		// next probe opens the sockets again.
		p.close()
		p.opened = false
		return probeError(ctx, p.Addr, "send SYN", timeout, err)
	}
	for {
		left := time.Until(deadline)
		if err := ctx.Err(); err != nil {
			return probeError(ctx, p.Addr, "connect", timeout, err)
		}
		if left <= 0 {
			return &ProbeError{Addr: p.Addr, Op: "connect", Err: &TimeoutError{After: timeout}}
		}
		// Slices of at most 10 ms, so that a shutdown is seen promptly.
		fds := []unix.PollFd{{Fd: int32(p.raw), Events: unix.POLLIN}}
		ts := unix.NsecToTimespec(int64(min(left, 10*time.Millisecond)))
		if _, err := unix.Ppoll(fds, &ts, nil); err != nil && err != unix.EINTR {
			return probeError(ctx, p.Addr, "connect", timeout, err)
		}
		for {
			flags, ack, ok := p.recv()
			if !ok {
				break
			}
			if flags&rewrite.ACK == 0 || ack != iss+1 {
				p.reset(flags, ack) // an earlier probe's late answer
				continue
			}
			switch {
			case flags&rewrite.RST != 0:
				return &ProbeError{Addr: p.Addr, Op: "connect", Err: syscall.ECONNREFUSED}
			case flags&rewrite.SYN != 0:
				p.reset(flags, ack)
				return nil
			}
		}
	}
}

// open makes the held source port and the raw socket that sends from it,
// with a filter that lets through only the server's segments to that port.
func (p *SYNProber) open() (err error) {
	p.raw, p.hold = -1, -1
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	// The source address the host routes to the server from.
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(p.Addr))
	if err != nil {
		return err
	}
	local := c.LocalAddr().(*net.UDPAddr).AddrPort()
	c.Close()
	srcIP := local.Addr().Unmap().As4()
	if p.hold, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
		return err
	}
	if err = unix.Bind(p.hold, &unix.SockaddrInet4{Addr: srcIP}); err != nil {
		return err
	}
	sa, err := unix.Getsockname(p.hold)
	if err != nil {
		return err
	}
	p.src = netip.AddrPortFrom(netip.AddrFrom4(srcIP), uint16(sa.(*unix.SockaddrInet4).Port))
	if p.raw, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_TCP); err != nil {
		return err
	}
	prog, err := bpf.Assemble(synAnswerProgram(p.Addr, p.src.Port()))
	if err != nil {
		return err
	}
	if err = capture.AttachFilter(p.raw, prog); err != nil {
		return fmt.Errorf("attach filter: %w", err)
	}
	if err = unix.Bind(p.raw, &unix.SockaddrInet4{Addr: srcIP}); err != nil {
		return err
	}
	p.drain() // what came before the filter was attached
	return nil
}

// synAnswerProgram accepts IPv4 TCP segments from server to port (a raw
// socket's packets start at the IP header), keeping what the prober's
// buffer holds.
func synAnswerProgram(server netip.AddrPort, port uint16) []bpf.Instruction {
	return []bpf.Instruction{
		bpf.LoadAbsolute{Off: 12, Size: 4}, // source address
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: binary.BigEndian.Uint32(server.Addr().Unmap().AsSlice()), SkipTrue: 6},
		bpf.LoadMemShift{Off: 0}, // X = IP header length
		bpf.LoadIndirect{Off: 0, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(server.Port()), SkipTrue: 3},
		bpf.LoadIndirect{Off: 2, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(port), SkipTrue: 1},
		bpf.RetConstant{Val: rewrite.BuildMin - rewrite.EthLen},
		bpf.RetConstant{Val: 0},
	}
}

// send writes a header-only TCP segment from the held port to the server.
// rewrite.Build makes a whole frame; the raw socket takes its TCP part and
// the kernel puts the same IPv4 header in front of it.
func (p *SYNProber) send(seq, ack uint32, flags uint8) error {
	s := rewrite.Spec{Src: p.src.Addr().As4(), Dst: p.Addr.Addr().As4(), SrcPort: p.src.Port(), DstPort: p.Addr.Port(),
		Seq: rewrite.Seq(seq), Ack: rewrite.Seq(ack), Flags: flags, Window: 1024, WScale: -1}
	n := rewrite.Build(p.buf[:], &s, &p.pkt)
	return unix.Sendto(p.raw, p.buf[rewrite.EthLen+20:n], 0, &unix.SockaddrInet4{Addr: s.Dst})
}

// recv reads one segment the filter let through, if any is queued. The raw
// socket gives it from its IPv4 header on; behind an Ethernet header it is
// a frame rewrite parses.
func (p *SYNProber) recv() (flags uint8, ack uint32, ok bool) {
	p.buf[12], p.buf[13] = 0x08, 0x00 // EtherType IPv4
	for {
		n, _, err := unix.Recvfrom(p.raw, p.buf[rewrite.EthLen:], 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, 0, false
		}
		if p.pkt.Parse(p.buf[:rewrite.EthLen+n], false, false) != rewrite.OK {
			continue
		}
		return p.pkt.Flags(), uint32(p.pkt.Ack()), true
	}
}

// drain empties the raw socket, resetting what needs it.
func (p *SYNProber) drain() {
	for {
		flags, ack, ok := p.recv()
		if !ok {
			return
		}
		p.reset(flags, ack)
	}
}

// reset answers a server's segment that acknowledges one of the prober's
// SYNs with a RST, as a host without the connection does (RFC 9293
// §3.10.7.1), so the server drops its half-open entry. The gateway's kernel
// answers too, unless a firewall keeps it quiet; a SYN-ACK that came after
// its probe gave up, left unanswered, would hold the server's entry for a
// minute and turn the next probes' SYNs away.
func (p *SYNProber) reset(flags uint8, ack uint32) {
	if flags&rewrite.RST == 0 && flags&rewrite.ACK != 0 {
		_ = p.send(ack, 0, rewrite.RST)
	}
}

// Close releases the sockets. A later Probe opens them again.
func (p *SYNProber) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.opened && p.fallback == nil {
		p.close()
	}
	p.opened, p.fallback = false, nil
	return nil
}

func (p *SYNProber) close() {
	for _, fd := range []*int{&p.raw, &p.hold} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}

// newConnectProber is the default prober without an HTTP path.
func newConnectProber(addr netip.AddrPort, timeout time.Duration) (Prober, string) {
	p := &SYNProber{Addr: addr, Timeout: timeout}
	return p, p.Kind()
}

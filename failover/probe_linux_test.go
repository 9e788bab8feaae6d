package failover

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Socket states in /proc/net/tcp.
const (
	tcpSynRecv  = "03"
	tcpTimeWait = "06"
)

// tcpSockets counts the sockets in /proc/net/tcp in state whose local
// (local true) or remote address is addr.
func tcpSockets(t testing.TB, addr netip.AddrPort, local bool, state string) int {
	t.Helper()
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Skipf("no /proc/net/tcp: %v", err)
	}
	defer f.Close()
	a := addr.Addr().As4()
	// /proc/net/tcp prints addresses as little-endian hex words.
	want := fmt.Sprintf("%02X%02X%02X%02X:%04X", a[3], a[2], a[1], a[0], addr.Port())
	col := 2
	if local {
		col = 1
	}
	n := 0
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 3 && fields[col] == want && fields[3] == state {
			n++
		}
	}
	return n
}

// fullListener returns the address of a listener whose accept queue is
// full: it drops SYNs, like a host that vanished.
func fullListener(t *testing.T) netip.AddrPort {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*syscall.SockaddrInet4).Port))
	// Fill the accept queue until a connect hangs.
	for range 8 {
		c, err := net.DialTimeout("tcp", addr.String(), 100*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Skip("accept queue never filled")
	return addr
}

// A TCP probe times out when the server's SYNs go unanswered.
func TestTCPProbeTimeout(t *testing.T) {
	addr := fullListener(t)
	p := &TCPProber{Addr: addr, Timeout: 20 * time.Millisecond}
	err := p.Probe(context.Background())
	var pe *ProbeError
	if !errors.As(err, &pe) || !pe.Timeout() {
		t.Fatalf("probe error %v, want a timeout", err)
	}
	want := "probe " + addr.String() + ": connect: timeout after 20ms"
	if err.Error() != want {
		t.Fatalf("error %q, want %q", err, want)
	}
}

// A probe connection is closed with a reset, so probing leaves no
// TIME_WAIT sockets behind on the prober's side.
func TestProbeLeavesNoTimeWait(t *testing.T) {
	ln, addr := listen(t)
	serve(ln, func(c net.Conn) {
		// Wait for the prober's close; the server's side then sees a reset.
		buf := make([]byte, 1)
		c.Read(buf)
		c.Close()
	})
	p := &TCPProber{Addr: addr, Timeout: time.Second}
	for range 5 {
		if err := p.Probe(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if n := tcpSockets(t, addr, false, tcpTimeWait); n > 0 {
		t.Fatalf("%d sockets to %v in TIME_WAIT after probing", n, addr)
	}
}

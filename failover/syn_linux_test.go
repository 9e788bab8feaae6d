package failover

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func requireRawSockets(t *testing.T) {
	t.Helper()
	if !rawSocketsAllowed() {
		t.Skip("raw SYN probes need CAP_NET_RAW: run as root (CI does)")
	}
}

// rawSocketsAllowed reports whether this process may open a raw socket.
func rawSocketsAllowed() bool {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

// A SYN probe tells a listening server (its kernel answers SYN-ACK), a
// closed port (RST: the process is gone) and a server that does not answer
// (timeout), with the errors a connect probe gives.
func TestSYNProbe(t *testing.T) {
	requireRawSockets(t)
	_, up := listen(t)
	closed := closedPort(t)
	full := fullListener(t)
	cases := []struct {
		name string
		addr netip.AddrPort
		want string // error; "" for none
	}{
		{"listening", up, ""},
		{"closed port", closed, "probe " + closed.String() + ": connect: connection refused"},
		{"SYNs dropped", full, "probe " + full.String() + ": connect: timeout after 20ms"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := &SYNProber{Addr: tc.addr, Timeout: 20 * time.Millisecond}
			defer p.Close()
			if err := p.Open(); err != nil {
				t.Fatal(err)
			}
			for range 3 { // the same sockets serve probe after probe
				err := p.Probe(context.Background())
				got := ""
				if err != nil {
					got = err.Error()
				}
				if got != tc.want {
					t.Fatalf("probe: %q, want %q", got, tc.want)
				}
			}
			var pe *ProbeError
			err := p.Probe(context.Background())
			switch tc.name {
			case "closed port":
				if !errors.Is(err, syscall.ECONNREFUSED) {
					t.Fatalf("%v is not ECONNREFUSED", err)
				}
			case "SYNs dropped":
				if !errors.As(err, &pe) || !pe.Timeout() {
					t.Fatalf("%v is not a timeout", err)
				}
			}
		})
	}
}

// A SYN probe never completes a handshake: the server's process has no
// connection to accept, and its kernel keeps no half-open entry once the
// prober's RST arrives. That is what makes it cheaper than connecting.
func TestSYNProbeLeavesNothingToAccept(t *testing.T) {
	requireRawSockets(t)
	ln, addr := listen(t)
	p := &SYNProber{Addr: addr, Timeout: time.Second}
	defer p.Close()
	for range 20 {
		if err := p.Probe(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	tl := ln.(*net.TCPListener)
	tl.SetDeadline(time.Now().Add(50 * time.Millisecond))
	if c, err := tl.Accept(); err == nil {
		c.Close()
		t.Fatal("a probe left a connection for the server to accept")
	}
	time.Sleep(50 * time.Millisecond)
	if n := tcpSockets(t, addr, true, tcpSynRecv); n > 0 {
		t.Fatalf("%d half-open connections left at %v", n, addr)
	}
}

// A context cancelled during a probe ends it promptly, as a shutdown.
func TestSYNProbeCancelled(t *testing.T) {
	requireRawSockets(t)
	p := &SYNProber{Addr: fullListener(t), Timeout: 5 * time.Second}
	defer p.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(30*time.Millisecond, cancel)
	start := time.Now()
	err := p.Probe(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("probe error %v, want context.Canceled", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("cancelled probe returned after %v", took)
	}
}

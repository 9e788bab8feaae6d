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
	isTimeout := func(err error) bool {
		var pe *ProbeError
		return errors.As(err, &pe) && pe.Timeout()
	}
	cases := []struct {
		name string
		addr func(t *testing.T) netip.AddrPort // in the subtest: a skip there skips that case only
		want string                            // the error, after "probe ADDR: "; "" for none
		is   func(error) bool                  // what the error must also be
	}{
		{"listening", func(t *testing.T) netip.AddrPort { _, a := listen(t); return a }, "", func(err error) bool { return err == nil }},
		{"closed port", func(t *testing.T) netip.AddrPort { return closedPort(t) }, "connect: connection refused", func(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }},
		{"SYNs dropped", fullListener, "connect: timeout after 20ms", isTimeout},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := tc.addr(t)
			want := ""
			if tc.want != "" {
				want = "probe " + addr.String() + ": " + tc.want
			}
			p := &SYNProber{Addr: addr, Timeout: 20 * time.Millisecond}
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
				if got != want || !tc.is(err) {
					t.Fatalf("probe: %q, want %q", got, want)
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

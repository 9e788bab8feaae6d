package failover

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// listen returns a loopback listener and its address.
func listen(t testing.TB) (net.Listener, netip.AddrPort) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, ln.Addr().(*net.TCPAddr).AddrPort()
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t testing.TB) netip.AddrPort {
	t.Helper()
	ln, addr := listen(t)
	ln.Close()
	return addr
}

// serve accepts connections on ln and hands each to fn until ln closes.
func serve(ln net.Listener, fn func(net.Conn)) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go fn(c)
		}
	}()
}

// silent is a server that accepts and never answers, as a hung one whose
// kernel still completes handshakes.
func silent(t testing.TB) netip.AddrPort {
	t.Helper()
	ln, addr := listen(t)
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	serve(ln, func(c net.Conn) {
		defer c.Close()
		<-done
	})
	return addr
}

// raw is a server that writes reply to each connection and closes it.
func raw(t testing.TB, reply string) netip.AddrPort {
	t.Helper()
	ln, addr := listen(t)
	serve(ln, func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 512)
		c.Read(buf)
		c.Write([]byte(reply))
	})
	return addr
}

func httpServer(t testing.TB, h http.HandlerFunc) netip.AddrPort {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s.Listener.Addr().(*net.TCPAddr).AddrPort()
}

func TestProbers(t *testing.T) {
	accepting, _ := listen(t) // the kernel accepts; nobody calls Accept
	okAddr := accepting.Addr().(*net.TCPAddr).AddrPort()
	var gotReq *http.Request
	httpOK := httpServer(t, func(w http.ResponseWriter, r *http.Request) {
		gotReq = r
		w.Write([]byte("hello"))
	})
	redirect := httpServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/elsewhere", http.StatusMovedPermanently)
	})
	unavailable := httpServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "busy", http.StatusServiceUnavailable)
	})
	refused := closedPort(t)
	hung := silent(t)
	const timeout = 20 * time.Millisecond

	tests := []struct {
		name    string
		p       Prober
		addr    netip.AddrPort
		wantErr string // "" for success
		timeout bool
		is      error
	}{
		{name: "tcp ok", p: &TCPProber{Addr: okAddr, Timeout: timeout}},
		{name: "tcp refused", p: &TCPProber{Addr: refused, Timeout: timeout}, addr: refused,
			wantErr: "connect: connection refused", is: syscall.ECONNREFUSED},
		{name: "tcp to a hung server succeeds", p: &TCPProber{Addr: hung, Timeout: timeout}},
		{name: "http ok", p: &HTTPProber{Addr: httpOK, Path: "/index.html", Host: "www.example", Timeout: timeout}},
		{name: "http redirect ok", p: &HTTPProber{Addr: redirect, Timeout: timeout}},
		{name: "http bad status", p: &HTTPProber{Addr: unavailable, Path: "/index.html", Timeout: timeout}, addr: unavailable,
			wantErr: "GET /index.html: status 503"},
		{name: "http refused", p: &HTTPProber{Addr: refused, Timeout: timeout}, addr: refused,
			wantErr: "connect: connection refused", is: syscall.ECONNREFUSED},
		{name: "http hung", p: &HTTPProber{Addr: hung, Timeout: timeout}, addr: hung,
			wantErr: "GET /: timeout after 20ms", timeout: true, is: os.ErrDeadlineExceeded},
		{name: "http malformed", p: &HTTPProber{Addr: raw(t, "SSH-2.0-OpenSSH\r\n"), Timeout: timeout},
			wantErr: `GET /: malformed status line "SSH-2.0-OpenSSH"`},
		{name: "http closed early", p: &HTTPProber{Addr: raw(t, ""), Timeout: timeout},
			wantErr: "GET /: connection closed before the status line"},
		{name: "http status without newline then close", p: &HTTPProber{Addr: raw(t, "HTTP/1.0 200 OK"), Timeout: timeout},
			wantErr: "connection closed before the status line"},
		{name: "http 1.0 ok", p: &HTTPProber{Addr: raw(t, "HTTP/1.0 204 No Content\r\n\r\n"), Timeout: timeout}},
		{name: "http 404", p: &HTTPProber{Addr: raw(t, "HTTP/1.1 404 Not Found\r\n\r\n"), Timeout: timeout},
			wantErr: "status 404"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			err := tc.p.Probe(context.Background())
			took := time.Since(start)
			if took > timeout+50*time.Millisecond {
				t.Errorf("probe took %v with a %v timeout", took, timeout)
			}
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("probe failed: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("probe succeeded, want %q", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q, want it to contain %q", err, tc.wantErr)
			}
			if tc.addr.IsValid() && !strings.HasPrefix(err.Error(), "probe "+tc.addr.String()+": ") {
				t.Fatalf("error %q does not name the server", err)
			}
			var pe *ProbeError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T is not a *ProbeError", err)
			}
			if pe.Timeout() != tc.timeout {
				t.Fatalf("Timeout() = %v, want %v", pe.Timeout(), tc.timeout)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("error %v is not %v", err, tc.is)
			}
		})
	}
	if gotReq == nil {
		t.Fatal("http server saw no request")
	}
	if gotReq.Host != "www.example" || gotReq.URL.Path != "/index.html" || gotReq.Proto != "HTTP/1.0" {
		t.Fatalf("request %s %s %s host %q", gotReq.Method, gotReq.URL, gotReq.Proto, gotReq.Host)
	}
}

func TestProbeContext(t *testing.T) {
	hung := silent(t)
	p := &HTTPProber{Addr: hung, Timeout: 5 * time.Second}

	// A context deadline shorter than Timeout bounds the probe and is
	// reported as a timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := p.Probe(ctx)
	if took := time.Since(start); took > time.Second {
		t.Fatalf("probe took %v despite a 20ms context deadline", took)
	}
	var pe *ProbeError
	if !errors.As(err, &pe) || !pe.Timeout() {
		t.Fatalf("probe error %v, want a timeout", err)
	}

	// Cancelling the context (shutdown) ends the probe at once and is not
	// a timeout.
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	start = time.Now()
	err = p.Probe(ctx)
	if took := time.Since(start); took > time.Second {
		t.Fatalf("probe took %v after cancel", took)
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("probe error %v, want context.Canceled", err)
	}
}

func BenchmarkHTTPProbe(b *testing.B) {
	addr := raw(b, "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
	p := &HTTPProber{Addr: addr, Path: "/index.html", Timeout: time.Second}
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Probe(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTCPProbe(b *testing.B) {
	_, addr := listen(b)
	p := &TCPProber{Addr: addr, Timeout: time.Second}
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Probe(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

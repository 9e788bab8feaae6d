package failover

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"
)

// Prober checks one server once. Probe must return within its own timeout
// (or when ctx ends): the Monitor never starts a server's next probe
// before the previous one returned.
type Prober interface {
	Probe(ctx context.Context) error
}

// TCPProber connects to Addr and closes at once. It detects a crashed
// server process (connection refused) and a lost host (timeout), but not a
// hung one: the kernel completes the handshake of a SIGSTOPped server's
// listening socket on its own. Use HTTPProber to detect hangs.
type TCPProber struct {
	Addr    netip.AddrPort
	Timeout time.Duration // 0: DefaultInterval
}

// Probe implements Prober.
func (p *TCPProber) Probe(ctx context.Context) error {
	timeout := budget(ctx, p.Timeout)
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialTCP(ctx, "tcp", netip.AddrPort{}, p.Addr)
	if err != nil {
		return probeError(ctx, p.Addr, "connect", timeout, err)
	}
	abort(c)
	return nil
}

// HTTPProber sends one HTTP/1.0 GET over a fresh connection and succeeds
// on a 2xx or 3xx status line within Timeout. Unlike TCPProber it detects
// a hung (SIGSTOPped) server, whose kernel still completes handshakes but
// whose process never answers.
type HTTPProber struct {
	Addr    netip.AddrPort
	Path    string        // "" is "/"
	Host    string        // Host header; "" is Addr
	Timeout time.Duration // for the whole exchange; 0: DefaultInterval
}

// maxStatusLine bounds what a probe reads: only the status line matters.
const maxStatusLine = 1024

// Probe implements Prober.
func (p *HTTPProber) Probe(ctx context.Context) error {
	start := time.Now()
	timeout := budget(ctx, p.Timeout)
	path := p.Path
	if path == "" {
		path = "/"
	}
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialTCP(ctx, "tcp", netip.AddrPort{}, p.Addr)
	if err != nil {
		return probeError(ctx, p.Addr, "connect", timeout, err)
	}
	defer abort(c)
	if err := c.SetDeadline(start.Add(timeout)); err != nil {
		return probeError(ctx, p.Addr, "GET "+path, timeout, err)
	}
	if ctx.Done() != nil {
		// Cut the exchange short on shutdown rather than wait for the
		// deadline.
		stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
		defer stop()
	}

	buf := make([]byte, 0, maxStatusLine)
	buf = append(buf, "GET "...)
	buf = append(buf, path...)
	buf = append(buf, " HTTP/1.0\r\nHost: "...)
	if p.Host != "" {
		buf = append(buf, p.Host...)
	} else {
		buf = p.Addr.AppendTo(buf)
	}
	buf = append(buf, "\r\nUser-Agent: understudy-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"...)
	if _, err := c.Write(buf); err != nil {
		return probeError(ctx, p.Addr, "GET "+path, timeout, err)
	}

	buf = buf[:cap(buf)]
	n := 0
	for {
		if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
			return statusError(p.Addr, path, buf[:i])
		}
		if n == len(buf) {
			return &ProbeError{Addr: p.Addr, Op: "GET " + path, Err: errors.New("status line too long")}
		}
		m, err := c.Read(buf[n:])
		n += m
		if err != nil && m == 0 {
			if err == io.EOF {
				err = errors.New("connection closed before the status line")
			}
			return probeError(ctx, p.Addr, "GET "+path, timeout, err)
		}
	}
}

// statusError parses an HTTP status line: nil for 2xx and 3xx.
func statusError(addr netip.AddrPort, path string, line []byte) error {
	line = bytes.TrimRight(line, "\r")
	// "HTTP/1.1 200 OK": the code is the three digits after the first space.
	sp := bytes.IndexByte(line, ' ')
	if !bytes.HasPrefix(line, []byte("HTTP/")) || sp < 0 || len(line) < sp+4 {
		return &ProbeError{Addr: addr, Op: "GET " + path, Err: fmt.Errorf("malformed status line %q", line)}
	}
	code, err := strconv.Atoi(string(line[sp+1 : sp+4]))
	if err != nil {
		return &ProbeError{Addr: addr, Op: "GET " + path, Err: fmt.Errorf("malformed status line %q", line)}
	}
	if code >= 200 && code < 400 {
		return nil
	}
	return &ProbeError{Addr: addr, Op: "GET " + path, Err: &StatusError{Code: code}}
}

// abort closes c with a reset (SO_LINGER 0): at 100 probes a second a
// normal close would leave thousands of sockets in TIME_WAIT.
func abort(c *net.TCPConn) {
	c.SetLinger(0)
	c.Close()
}

// budget is the probe's time: its own timeout, shortened by ctx's deadline.
func budget(ctx context.Context, timeout time.Duration) time.Duration {
	if timeout <= 0 {
		timeout = DefaultInterval
	}
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); left < timeout {
			timeout = max(left, 0)
		}
	}
	return timeout
}

// ProbeError says which server and which step of a probe failed:
// "probe 10.77.2.10:80: connect: connection refused".
type ProbeError struct {
	Addr netip.AddrPort
	Op   string // "connect", "GET /index.html"
	Err  error  // a syscall.Errno, *TimeoutError, *StatusError, context.Canceled, ...
}

func (e *ProbeError) Error() string {
	return "probe " + e.Addr.String() + ": " + e.Op + ": " + e.Err.Error()
}

func (e *ProbeError) Unwrap() error { return e.Err }

// Timeout reports whether the probe ran out of time.
func (e *ProbeError) Timeout() bool {
	var t *TimeoutError
	return errors.As(e.Err, &t)
}

// TimeoutError is a probe that got no answer within its timeout.
type TimeoutError struct {
	After time.Duration
}

func (e *TimeoutError) Error() string { return "timeout after " + e.After.String() }

// Timeout makes TimeoutError a net.Error timeout.
func (e *TimeoutError) Timeout() bool { return true }

// Is lets callers test errors.Is(err, os.ErrDeadlineExceeded).
func (e *TimeoutError) Is(target error) bool { return target == os.ErrDeadlineExceeded }

// StatusError is an HTTP answer other than 2xx or 3xx.
type StatusError struct {
	Code int
}

func (e *StatusError) Error() string { return "status " + strconv.Itoa(e.Code) }

// probeError strips the net package's layers down to the cause
// ("connection refused"), names timeouts with the budget they exceeded,
// and tells a shutdown (ctx cancelled) from a failure.
func probeError(ctx context.Context, addr netip.AddrPort, op string, timeout time.Duration, err error) error {
	var ne net.Error
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		err = context.Canceled
	case errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout()):
		err = &TimeoutError{After: timeout}
	default:
		var se *os.SyscallError
		var oe *net.OpError
		if errors.As(err, &se) {
			err = se.Err
		} else if errors.As(err, &oe) {
			err = oe.Err
		}
	}
	return &ProbeError{Addr: addr, Op: op, Err: err}
}

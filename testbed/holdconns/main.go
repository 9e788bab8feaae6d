// Command holdconns opens idle TCP connections and keeps them until its
// standard input closes, then resets them. The bench harness runs several in
// the client namespace to hold 100k flows through the gateway: one process
// may hold no more files than its hard limit allows.
//
//	holdconns -src 10.77.1.10 -dst 10.77.0.100:80 -n 15000
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	src := flag.String("src", "", "source address")
	dst := flag.String("dst", "", "destination address:port")
	n := flag.Int("n", 1000, "connections")
	workers := flag.Int("workers", 32, "concurrent connects")
	timeout := flag.Duration("timeout", 2*time.Minute, "give up opening after this")
	flag.Parse()
	s, err1 := netip.ParseAddr(*src)
	d, err2 := netip.ParseAddrPort(*dst)
	if err := errors.Join(err1, err2); err != nil || !s.Is4() || !d.Addr().Is4() {
		fmt.Fprintf(os.Stderr, "holdconns: want IPv4 -src and -dst: %v\n", err)
		os.Exit(2)
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	}

	var (
		mu       sync.Mutex
		fds      []int
		next     atomic.Int64
		failed   atomic.Int64
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(*timeout)
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(*n) && time.Now().Before(deadline) {
				fd, err := dial(s.As4(), d.Addr().As4(), int(d.Port()))
				mu.Lock()
				if err != nil {
					failed.Add(1)
					if firstErr == nil {
						firstErr = err
					}
				} else {
					fds = append(fds, fd)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	// One line for the harness: held, failed, milliseconds, first error.
	fmt.Printf("held %d failed %d ms %d err %v\n", len(fds), failed.Load(), time.Since(start).Milliseconds(), firstErr)
	_, _ = io.Copy(io.Discard, os.Stdin)
	lin := unix.Linger{Onoff: 1, Linger: 0}
	for _, fd := range fds {
		_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &lin)
		unix.Close(fd)
	}
}

// dial connects from src with the port chosen at connect
// (IP_BIND_ADDRESS_NO_PORT), so each source address has every port towards
// each destination.
func dial(src, dst [4]byte, port int) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	fail := func(op string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("%s: %w", op, err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1); err != nil {
		return fail("IP_BIND_ADDRESS_NO_PORT", err)
	}
	tv := unix.Timeval{Sec: 5}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return fail("SO_SNDTIMEO", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src}); err != nil {
		return fail("bind", err)
	}
	for {
		err := unix.Connect(fd, &unix.SockaddrInet4{Addr: dst, Port: port})
		switch {
		case err == nil, errors.Is(err, unix.EISCONN):
			return fd, nil
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.EALREADY):
			// The handshake goes on; the Go runtime's signals interrupt it.
			time.Sleep(time.Millisecond)
		default:
			return fail("connect", err)
		}
	}
}

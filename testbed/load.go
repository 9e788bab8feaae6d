package testbed

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"
)

// LoadResult is what a checking load client saw.
type LoadResult struct {
	Requests   int64            // requests answered 200 with the right body
	Corrupt    int64            // bodies whose sha256 was wrong
	Errors     int64            // connect, write and read errors, timeouts and non-200 statuses
	Connects   int64            // connections opened
	FirstError string           // the first error or corruption, and when into the load it came, for the log
	ByPath     map[string]int64 // good answers per path
}

// LoadOptions shape Load's clients.
type LoadOptions struct {
	Conns int // concurrent connections
	// MaxConnAge closes a connection, between two requests, once it is
	// this old (0: never): a client that keeps a connection across two
	// failovers of different servers loses it, as the flow lost its
	// shadow at the first.
	MaxConnAge time.Duration
	Timeout    time.Duration // per request (default 10s)
}

// Load runs opts.Conns keep-alive HTTP/1.1 clients against the VIP from the
// client namespace until ctx ends, each requesting the paths of want in
// turn and checking every body against want (path -> sha256): a wrk whose
// every reply is verified, not only counted. Each client speaks HTTP on its
// own connection, with no retries, so every failure is counted; its
// sockets are opened in the client namespace, in the test's own process.
func (b *Bed) Load(ctx context.Context, opts LoadOptions, want map[string]string) *LoadResult {
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Second
	}
	res := &LoadResult{ByPath: map[string]int64{}}
	paths := make([]string, 0, len(want))
	for p := range want {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var mu sync.Mutex
	start := time.Now()
	fail := func(counter *int64, format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		*counter++
		if res.FirstError == "" {
			res.FirstError = fmt.Sprintf("%v in: ", time.Since(start).Round(time.Millisecond)) + fmt.Sprintf(format, a...)
		}
	}
	var wg sync.WaitGroup
	for w := range opts.Conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := sha256.New()
			var conn net.Conn
			var br *bufio.Reader
			var opened time.Time
			defer func() {
				if conn != nil {
					conn.Close()
				}
			}()
			for i := w; ctx.Err() == nil; i++ {
				if conn != nil && opts.MaxConnAge > 0 && time.Since(opened) > opts.MaxConnAge {
					conn.Close()
					conn = nil
				}
				if conn == nil {
					err := inNS(b.Client(), func() (err error) {
						conn, err = net.DialTimeout("tcp", net.JoinHostPort(VIP, "80"), opts.Timeout)
						return err
					})
					if err != nil {
						conn = nil
						fail(&res.Errors, "connect: %v", err)
						time.Sleep(10 * time.Millisecond)
						continue
					}
					mu.Lock()
					res.Connects++
					mu.Unlock()
					br, opened = bufio.NewReader(conn), time.Now()
				}
				path := paths[i%len(paths)]
				conn.SetDeadline(time.Now().Add(opts.Timeout))
				r, err := get(conn, br, path, h)
				switch {
				case err != nil:
					fail(&res.Errors, "%v", err)
				case r.status != http.StatusOK:
					fail(&res.Errors, "GET %s: status %d", path, r.status)
				case r.sum != want[path]:
					fail(&res.Corrupt, "GET %s: body sha256 %s, want %s", path, r.sum, want[path])
				default:
					mu.Lock()
					res.Requests++
					res.ByPath[path]++
					mu.Unlock()
				}
				if err != nil || r.close {
					conn.Close()
					conn = nil
				}
			}
		}()
	}
	wg.Wait()
	return res
}

// reply is what get read of one answer.
type reply struct {
	status int
	sum    string // the body's sha256, hex
	close  bool   // the server closes the connection after it
}

// get sends GET path on a keep-alive connection whose reads go through br
// and reads the answer whole, hashing its body with h. Its error names the
// step that failed: write, read or body.
func get(c net.Conn, br *bufio.Reader, path string, h hash.Hash) (reply, error) {
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, VIP); err != nil {
		return reply{}, fmt.Errorf("GET %s: write: %w", path, err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return reply{}, fmt.Errorf("GET %s: read: %w", path, err)
	}
	defer resp.Body.Close()
	h.Reset()
	if _, err := io.Copy(h, resp.Body); err != nil {
		return reply{}, fmt.Errorf("GET %s: body: %w", path, err)
	}
	return reply{status: resp.StatusCode, sum: hex.EncodeToString(h.Sum(nil)), close: resp.Close}, nil
}

package testbed

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// LoadResult is what a checking load client saw.
type LoadResult struct {
	Requests   int64            // requests answered 200 with the right body
	Corrupt    int64            // bodies whose length or sha256 was wrong
	Errors     int64            // transport errors, timeouts and non-200 statuses
	Connects   int64            // connections opened
	FirstError string           // the first error or corruption, for the log
	ByPath     map[string]int64 // good answers per path
}

// Load runs conns keep-alive HTTP/1.1 clients against the VIP from the
// client namespace until ctx ends, each requesting paths in turn and
// checking every body against want (path -> sha256): a wrk whose every
// reply is verified, not only counted. Its sockets are opened in the client
// namespace; it runs in the test's own process.
func (b *Bed) Load(ctx context.Context, conns int, want map[string]string) *LoadResult {
	res := &LoadResult{ByPath: map[string]int64{}}
	var connects atomic.Int64
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := inNS(b.Client(), func() (err error) {
				c, err = dialer.DialContext(ctx, network, addr)
				return err
			})
			if err == nil {
				connects.Add(1)
			}
			return c, err
		},
		MaxIdleConnsPerHost: conns,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	paths := make([]string, 0, len(want))
	for p := range want {
		paths = append(paths, p)
	}
	var mu sync.Mutex
	note := func(counter *int64, msg string) {
		mu.Lock()
		defer mu.Unlock()
		*counter++
		if res.FirstError == "" {
			res.FirstError = msg
		}
	}
	var wg sync.WaitGroup
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := sha256.New()
			for i := w; ctx.Err() == nil; i++ {
				path := paths[i%len(paths)]
				req, _ := http.NewRequestWithContext(context.WithoutCancel(ctx), "GET", URL(path), nil)
				resp, err := client.Do(req)
				if err != nil {
					note(&res.Errors, fmt.Sprintf("GET %s: %v", path, err))
					continue
				}
				h.Reset()
				_, err = io.Copy(h, resp.Body)
				resp.Body.Close()
				switch sum := hex.EncodeToString(h.Sum(nil)); {
				case err != nil:
					note(&res.Errors, fmt.Sprintf("GET %s: body: %v", path, err))
				case resp.StatusCode != http.StatusOK:
					note(&res.Errors, fmt.Sprintf("GET %s: status %d", path, resp.StatusCode))
				case sum != want[path]:
					note(&res.Corrupt, fmt.Sprintf("GET %s: body sha256 %s, want %s", path, sum, want[path]))
				default:
					mu.Lock()
					res.Requests++
					res.ByPath[path]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	res.Connects = connects.Load()
	return res
}

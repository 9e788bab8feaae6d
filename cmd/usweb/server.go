package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// server is usweb's handler: static files plus the body-hashing POST
// handlers and the transaction service.
type server struct {
	root   http.Dir
	static http.Handler
	own    http.Dir // served under /own/: content that is this server's alone ("": none)
	ledger *ledger
	conns  atomic.Uint64

	mu   sync.Mutex // serialises whole lines to log
	logw io.Writer
}

// BodyReply is the JSON answer to POST /upload and /transfer.
type BodyReply struct {
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

type connKey struct{}

// connInfo numbers connections and their requests, like nginx's
// $connection and $connection_requests, so tests can see keep-alive reuse.
type connInfo struct {
	id   uint64
	reqs atomic.Uint64
}

func newServer(root string, logw io.Writer, l *ledger) *server {
	return &server{root: http.Dir(root), static: http.FileServer(http.Dir(root)), ledger: l, logw: logw}
}

// connContext is the http.Server ConnContext hook.
func (s *server) connContext(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, &connInfo{id: s.conns.Add(1)})
}

func (s *server) logf(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.logw, format+"\n", args...)
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w, status: http.StatusOK}
	body := &countingReader{r: r.Body}
	r.Body = body

	switch {
	case r.URL.Path == "/upload" || r.URL.Path == "/transfer":
		if r.Method != http.MethodPost {
			rec.Header().Set("Allow", http.MethodPost)
			http.Error(rec, "method not allowed", http.StatusMethodNotAllowed)
			break
		}
		if r.URL.Path == "/transfer" {
			s.transfer(rec, r)
			break
		}
		s.hashBody(rec, r, "upload")
	case r.URL.Path == "/ledger" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		s.serveLedger(rec, r)
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		s.serveStatic(rec, r)
	default:
		rec.Header().Set("Allow", "GET, HEAD")
		http.Error(rec, "method not allowed", http.StatusMethodNotAllowed)
	}

	var connID, connReqs uint64
	if ci, ok := r.Context().Value(connKey{}).(*connInfo); ok {
		connID, connReqs = ci.id, ci.reqs.Add(1)
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	// Same fields as the testbed's nginx log_format, prefixed "req"; the
	// request length here counts body bytes only.
	s.logf("req %s %s %d %d %d %d %d %.3f %s", host, r.Method, rec.status, rec.bytes,
		body.n, connID, connReqs, time.Since(start).Seconds(), r.URL.Path)
}

// serveStatic serves regular files itself, because http.FileServer would
// redirect /index.html to ./, which nginx does not; directories are left to
// http.FileServer.
func (s *server) serveStatic(w http.ResponseWriter, r *http.Request) {
	name := path.Clean("/" + r.URL.Path)
	dir := s.root
	if rest, ok := strings.CutPrefix(name, "/own/"); ok && s.own != "" {
		dir, name = s.own, "/"+rest
	}
	if f, err := dir.Open(name); err == nil {
		defer f.Close()
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			http.ServeContent(w, r, name, st.ModTime(), f)
			return
		}
	}
	s.static.ServeHTTP(w, r)
}

// hashBody streams the body through SHA-256 and logs "<kind> <bytes> <sha256>"
// only when the whole body arrived; a cut-short body logs "<kind>-incomplete".
func (s *server) hashBody(w http.ResponseWriter, r *http.Request, kind string) {
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		s.logf("%s-incomplete %d %v", kind, n, err)
		http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
		return
	}
	sum := hex.EncodeToString(h.Sum(nil))
	s.logf("%s %d %s", kind, n, sum)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(BodyReply{Bytes: n, SHA256: sum})
}

// recorder notes the status and the body bytes written, for the log line.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

// ReadFrom keeps http.FileServer on the sendfile path through the wrapper.
func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	n, err := io.Copy(r.ResponseWriter, src)
	r.bytes += n
	return n, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

type countingReader struct {
	r io.ReadCloser
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) Close() error { return c.r.Close() }

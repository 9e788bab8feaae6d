package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// syncBuffer is a log sink that the handler goroutines and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Split(strings.TrimSpace(s.b.String()), "\n")
}

func newTestServer(t *testing.T) (*httptest.Server, *syncBuffer) {
	t.Helper()
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "index.html"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	s := newServer(root, logs, &ledger{})
	ts := httptest.NewUnstartedServer(s)
	ts.Config.ConnContext = s.connContext
	ts.Start()
	t.Cleanup(ts.Close)
	return ts, logs
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestServer(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	tests := []struct {
		name       string
		method     string
		path       string
		body       []byte
		wantStatus int
		wantBody   string // exact body, when not a BodyReply
		wantReply  bool   // body is a BodyReply for body
		wantLog    string // first log line, when not only "req"
	}{
		{name: "static", method: "GET", path: "/index.html", wantStatus: 200, wantBody: "hello\n"},
		{name: "static head", method: "HEAD", path: "/index.html", wantStatus: 200},
		{name: "static missing", method: "GET", path: "/nope", wantStatus: 404, wantBody: "404 page not found\n"},
		{name: "upload empty", method: "POST", path: "/upload", body: []byte{}, wantStatus: 200, wantReply: true,
			wantLog: "upload 0 " + sha(nil)},
		{name: "upload 1 MiB", method: "POST", path: "/upload", body: big, wantStatus: 200, wantReply: true,
			wantLog: "upload 1048576 " + sha(big)},
		{name: "transfer", method: "POST", path: "/transfer", body: []byte("from=a&to=b&amount=5"), wantStatus: 200,
			wantBody: `{"seq":1,"from":"a","to":"b","amount":5,"memo_sha256":"` + sha(nil) + `"}` + "\n",
			wantLog:  "transfer 20 " + sha([]byte("from=a&to=b&amount=5"))},
		{name: "ledger empty", method: "GET", path: "/ledger", wantStatus: 200},
		{name: "transfer wrong method", method: "GET", path: "/transfer", wantStatus: 405},
		{name: "upload wrong method", method: "GET", path: "/upload", wantStatus: 405},
		{name: "static wrong method", method: "PUT", path: "/index.html", body: []byte("x"), wantStatus: 405},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts, logs := newTestServer(t)
			req, err := http.NewRequest(tc.method, ts.URL+tc.path, bytes.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := ts.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d (body %q)", resp.StatusCode, tc.wantStatus, got)
			}
			switch {
			case tc.wantReply:
				var r BodyReply
				if err := json.Unmarshal(got, &r); err != nil {
					t.Fatalf("reply %q: %v", got, err)
				}
				if want := (BodyReply{Bytes: int64(len(tc.body)), SHA256: sha(tc.body)}); r != want {
					t.Errorf("reply %+v, want %+v", r, want)
				}
			case tc.wantBody != "":
				if string(got) != tc.wantBody {
					t.Errorf("body %q, want %q", got, tc.wantBody)
				}
			}
			lines := logs.lines()
			if tc.wantLog != "" {
				if len(lines) != 2 || lines[0] != tc.wantLog {
					t.Fatalf("log %q, want %q then a req line", lines, tc.wantLog)
				}
				lines = lines[1:]
			}
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "req 127.0.0.1 "+tc.method+" ") ||
				!strings.HasSuffix(lines[0], " "+tc.path) {
				t.Errorf("request log %q", lines)
			}
		})
	}
}

// TestKeepAliveCounters checks the connection and per-connection request
// numbers that tests use to see keep-alive reuse.
func TestKeepAliveCounters(t *testing.T) {
	ts, logs := newTestServer(t)
	for range 3 {
		resp, err := ts.Client().Get(ts.URL + "/index.html")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for i, line := range logs.lines() {
		f := strings.Fields(line)
		// req host method status bytes reqlen conn connreqs seconds path
		if len(f) != 10 || f[3] != "200" || f[4] != "6" || f[6] != "1" || f[7] != string(rune('1'+i)) {
			t.Errorf("line %d: %q, want status 200, 6 bytes, conn 1, request %d", i, line, i+1)
		}
	}
}

type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, errors.New("connection reset")
	}
	n := min(len(p), f.n)
	f.n -= n
	return n, nil
}

// TestIncompleteBody: a body cut short must never log as a whole upload.
func TestIncompleteBody(t *testing.T) {
	logs := &syncBuffer{}
	s := newServer(t.TempDir(), logs, &ledger{})
	req := httptest.NewRequest("POST", "/upload", io.NopCloser(&failingReader{n: 1000}))
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	if w.Code != http.StatusBadRequest {
		t.Errorf("status %d, want 400", w.Code)
	}
	if lines := logs.lines(); !strings.HasPrefix(lines[0], "upload-incomplete 1000 ") {
		t.Errorf("log %q, want upload-incomplete 1000", lines)
	}
}

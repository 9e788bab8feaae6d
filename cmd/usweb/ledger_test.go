package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// post sends one transfer and returns the status and the body.
func post(t *testing.T, h http.Handler, contentType, body string) (int, string) {
	t.Helper()
	req := httptest.NewRequest("POST", "/transfer", strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Code, w.Body.String()
}

func getLedger(t *testing.T, h http.Handler) string {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/ledger", nil))
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("GET /ledger: %d %q", w.Code, w.Header())
	}
	return w.Body.String()
}

func receiptLine(seq int64, from, to string, amount int64, memo string) string {
	return fmt.Sprintf(`{"seq":%d,"from":%q,"to":%q,"amount":%d,"memo_sha256":"%s"}`+"\n", seq, from, to, amount, sha([]byte(memo)))
}

func TestTransfer(t *testing.T) {
	bigMemo := strings.Repeat("m", 5<<20) // a transfer that takes a while to send
	jsonBody := func(from, to string, amount int64, memo string) string {
		b, _ := json.Marshal(TransferRequest{From: from, To: to, Amount: amount, Memo: memo})
		return string(b)
	}
	form := url.Values{"from": {"alice"}, "to": {"bob"}, "amount": {"42"}, "memo": {"rent"}}.Encode()
	tests := []struct {
		name        string
		contentType string
		body        string
		wantStatus  int
		wantBody    string // the receipt; empty for an error
	}{
		{"form", "application/x-www-form-urlencoded", form, 200, receiptLine(1, "alice", "bob", 42, "rent")},
		{"form without content type", "", form, 200, receiptLine(1, "alice", "bob", 42, "rent")},
		{"json", "application/json", jsonBody("carol", "dave", 7, "x"), 200, receiptLine(1, "carol", "dave", 7, "x")},
		{"json charset", "application/json; charset=utf-8", jsonBody("c", "d", 1, ""), 200, receiptLine(1, "c", "d", 1, "")},
		{"json large memo", "application/json", jsonBody("a", "b", 1, bigMemo), 200, receiptLine(1, "a", "b", 1, bigMemo)},
		{"json unknown field", "application/json", `{"from":"a","to":"b","amount":1,"fee":2}`, 400, ""},
		{"json fractional amount", "application/json", `{"from":"a","to":"b","amount":1.5}`, 400, ""},
		{"json truncated", "application/json", `{"from":"a","to":"b","amo`, 400, ""},
		{"missing to", "", "from=a&amount=1", 400, ""},
		{"zero amount", "", "from=a&to=b&amount=0", 400, ""},
		{"negative amount", "application/json", jsonBody("a", "b", -1, ""), 400, ""},
		{"bad amount", "", "from=a&to=b&amount=ten", 400, ""},
		{"newline in name", "", "from=a%0Ab&to=b&amount=1", 400, ""},
		{"other content type", "text/plain", form, 400, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logs := &syncBuffer{}
			s := newServer(t.TempDir(), logs, &ledger{})
			status, body := post(t, s, tc.contentType, tc.body)
			if status != tc.wantStatus {
				t.Fatalf("status %d, want %d (%q)", status, tc.wantStatus, body)
			}
			// The whole body is logged as received even when it is refused.
			if want := fmt.Sprintf("transfer %d %s", len(tc.body), sha([]byte(tc.body))); logs.lines()[0] != want {
				t.Errorf("log %q, want first %q", logs.lines(), want)
			}
			ledger := getLedger(t, s)
			if tc.wantBody == "" {
				if ledger != "" {
					t.Errorf("a refused transfer left %q in the ledger", ledger)
				}
				return
			}
			if body != tc.wantBody {
				t.Errorf("receipt %q, want %q", body, tc.wantBody)
			}
			if ledger != tc.wantBody {
				t.Errorf("ledger %q, want the receipt %q", ledger, tc.wantBody)
			}
		})
	}
}

// TestTransferDeterministic: two servers with the same request history give
// the same bytes, receipts and ledgers alike, as a failover requires.
func TestTransferDeterministic(t *testing.T) {
	var replies [2][]string
	var ledgers [2]string
	for i := range 2 {
		dir := t.TempDir()
		l, err := openLedger(filepath.Join(dir, "ledger"))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		s := newServer(dir, io.Discard, l)
		ts := httptest.NewServer(s)
		defer ts.Close()
		for n := range 3 {
			resp, err := ts.Client().Post(ts.URL+"/transfer", "application/x-www-form-urlencoded",
				strings.NewReader(fmt.Sprintf("from=a&to=b&amount=%d&memo=m%d", n+1, n)))
			if err != nil {
				t.Fatal(err)
			}
			var raw bytes.Buffer
			resp.Header.Del("Date")
			_ = resp.Header.Write(&raw)
			_, _ = io.Copy(&raw, resp.Body)
			resp.Body.Close()
			replies[i] = append(replies[i], raw.String())
		}
		data, err := os.ReadFile(filepath.Join(dir, "ledger"))
		if err != nil {
			t.Fatal(err)
		}
		ledgers[i] = string(data)
		if got := getLedger(t, s); got != ledgers[i] {
			t.Errorf("GET /ledger %q, file %q", got, ledgers[i])
		}
	}
	for n := range replies[0] {
		if replies[0][n] != replies[1][n] {
			t.Errorf("reply %d differs:\n%q\n%q", n, replies[0][n], replies[1][n])
		}
	}
	if ledgers[0] != ledgers[1] {
		t.Errorf("ledgers differ:\n%q\n%q", ledgers[0], ledgers[1])
	}
	want := receiptLine(1, "a", "b", 1, "m0") + receiptLine(2, "a", "b", 2, "m1") + receiptLine(3, "a", "b", 3, "m2")
	if ledgers[0] != want {
		t.Errorf("ledger %q, want %q", ledgers[0], want)
	}
}

// TestLedgerReopen: a restarted server numbers on from its ledger, and a
// line cut short by a crash mid-write neither counts nor stays.
func TestLedgerReopen(t *testing.T) {
	tests := []struct {
		name    string
		initial string
		wantSeq int64
		keep    string // what of initial survives
	}{
		{"missing", "", 1, ""},
		{"two lines", receiptLine(1, "a", "b", 1, "") + receiptLine(2, "a", "b", 2, ""), 3,
			receiptLine(1, "a", "b", 1, "") + receiptLine(2, "a", "b", 2, "")},
		{"torn last line", receiptLine(1, "a", "b", 1, "") + `{"seq":2,"fr`, 2, receiptLine(1, "a", "b", 1, "")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ledger")
			if tc.initial != "" {
				if err := os.WriteFile(path, []byte(tc.initial), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			l, err := openLedger(path)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			s := newServer(t.TempDir(), io.Discard, l)
			if status, body := post(t, s, "", "from=x&to=y&amount=9"); status != 200 || body != receiptLine(tc.wantSeq, "x", "y", 9, "") {
				t.Fatalf("%d %q, want seq %d", status, body, tc.wantSeq)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if want := tc.keep + receiptLine(tc.wantSeq, "x", "y", 9, ""); string(data) != want {
				t.Errorf("ledger file %q, want %q", data, want)
			}
		})
	}
}

// TestOwn: /own/ is served from the server's own directory when it has one.
func TestOwn(t *testing.T) {
	root, own := t.TempDir(), t.TempDir()
	for dir, body := range map[string]string{root: "shared", own: "mine"} {
		if err := os.MkdirAll(filepath.Join(dir, "own"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name     string
		own      string
		path     string
		wantCode int
		wantBody string
	}{
		{"own file", own, "/own/f", 200, "mine"},
		{"shared file", own, "/f", 200, "shared"},
		{"own missing", own, "/own/nope", 404, ""},
		{"no own directory", "", "/own/f", 404, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(root, io.Discard, &ledger{})
			s.own = http.Dir(tc.own)
			w := httptest.NewRecorder()
			s.ServeHTTP(w, httptest.NewRequest("GET", tc.path, nil))
			if w.Code != tc.wantCode || (tc.wantBody != "" && w.Body.String() != tc.wantBody) {
				t.Errorf("GET %s: %d %q, want %d %q", tc.path, w.Code, w.Body.String(), tc.wantCode, tc.wantBody)
			}
		})
	}
}

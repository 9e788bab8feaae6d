package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
)

// maxTransferBody bounds a transfer's body, as client_max_body_size does in
// the testbed's nginx.
const maxTransferBody = 256 << 20

// TransferRequest is the body of POST /transfer, as JSON or as a form.
type TransferRequest struct {
	From   string `json:"from"`
	To     string `json:"to"`
	Amount int64  `json:"amount"`
	Memo   string `json:"memo"`
}

// Receipt is the answer to POST /transfer and, one per line, the ledger.
// It holds nothing specific to the host or the time, so two servers that saw
// the same requests in the same order answer byte for byte alike.
type Receipt struct {
	Seq        int64  `json:"seq"`
	From       string `json:"from"`
	To         string `json:"to"`
	Amount     int64  `json:"amount"`
	MemoSHA256 string `json:"memo_sha256"`
}

// ledger is an append-only file of receipts, one JSON line each; a receipt's
// seq is the number of lines before it plus one. Its content is also kept in
// memory for GET /ledger.
type ledger struct {
	mu   sync.Mutex
	f    *os.File // nil: kept in memory only
	data []byte   // whole lines
	n    int64    // lines
}

// openLedger opens (or creates) the ledger at path and counts its lines; a
// last line cut short by a crash mid-write is dropped, so it never counts.
// An empty path keeps the ledger in memory.
func openLedger(path string) (*ledger, error) {
	l := &ledger{}
	if path == "" {
		return l, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	data, err := io.ReadAll(f)
	if err == nil {
		whole := bytes.LastIndexByte(data, '\n') + 1
		data = data[:whole]
		err = f.Truncate(int64(whole))
	}
	if err == nil {
		_, err = f.Seek(0, io.SeekEnd)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("ledger %s: %w", path, err)
	}
	l.f, l.data, l.n = f, data, int64(bytes.Count(data, []byte{'\n'}))
	return l, nil
}

// append records one transfer and returns its receipt line. The line is
// written with a single write, so a crash leaves it whole or absent.
func (l *ledger) append(req TransferRequest) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	sum := sha256.Sum256([]byte(req.Memo))
	line, err := json.Marshal(Receipt{Seq: l.n + 1, From: req.From, To: req.To, Amount: req.Amount,
		MemoSHA256: hex.EncodeToString(sum[:])})
	if err != nil {
		return nil, err
	}
	line = append(line, '\n')
	if l.f != nil {
		if _, err := l.f.Write(line); err != nil {
			return nil, fmt.Errorf("ledger: %w", err)
		}
	}
	l.data = append(l.data, line...)
	l.n++
	return line, nil
}

// contents is a copy of the ledger's lines.
func (l *ledger) contents() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.data)
}

func (l *ledger) Close() error {
	if l.f == nil {
		return nil
	}
	return l.f.Close()
}

// parseTransfer reads a whole transfer body, JSON or form, and validates it.
func parseTransfer(contentType string, body []byte) (TransferRequest, error) {
	var req TransferRequest
	mt, _, _ := mime.ParseMediaType(contentType)
	switch mt {
	case "application/json":
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return req, fmt.Errorf("JSON body: %w", err)
		}
	case "application/x-www-form-urlencoded", "":
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return req, fmt.Errorf("form body: %w", err)
		}
		req.From, req.To, req.Memo = form.Get("from"), form.Get("to"), form.Get("memo")
		if req.Amount, err = strconv.ParseInt(form.Get("amount"), 10, 64); err != nil {
			return req, fmt.Errorf("amount %q: want an integer", form.Get("amount"))
		}
	default:
		return req, fmt.Errorf("content type %q: want application/json or a form", mt)
	}
	switch {
	case req.From == "" || req.To == "":
		return req, errors.New("from and to are required")
	case req.Amount <= 0:
		return req, fmt.Errorf("amount %d: want a positive integer", req.Amount)
	case strings.ContainsAny(req.From+req.To, "\r\n"):
		return req, errors.New("from and to must be one line each")
	}
	return req, nil
}

// transfer handles POST /transfer: the ledger changes only once the whole
// body has arrived and is valid, so a request cut short by a failure leaves
// no trace. The body's hash is logged like an upload's, for UploadLog.
func (s *server) transfer(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxTransferBody))
	if err != nil {
		s.logf("transfer-incomplete %d %v", len(body), err)
		http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
		return
	}
	sum := sha256.Sum256(body)
	s.logf("transfer %d %s", len(body), hex.EncodeToString(sum[:]))
	req, err := parseTransfer(r.Header.Get("Content-Type"), body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	line, err := s.ledger.append(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(line)
}

// serveLedger handles GET /ledger: every receipt so far, one JSON line each.
func (s *server) serveLedger(w http.ResponseWriter, r *http.Request) {
	data := s.ledger.contents()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	if r.Method != http.MethodHead {
		_, _ = w.Write(data)
	}
}

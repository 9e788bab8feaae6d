package testbed

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// TransferRequest is the body of usweb's POST /transfer.
type TransferRequest struct {
	From   string `json:"from"`
	To     string `json:"to"`
	Amount int64  `json:"amount"`
	Memo   string `json:"memo"`
}

// Receipt is usweb's answer to POST /transfer, and a line of its ledger.
type Receipt struct {
	Seq        int64  `json:"seq"`
	From       string `json:"from"`
	To         string `json:"to"`
	Amount     int64  `json:"amount"`
	MemoSHA256 string `json:"memo_sha256"`
	// Raw is the receipt as the server wrote it, without the newline:
	// what the client was told must equal the ledger's line byte for byte.
	Raw string `json:"-"`
}

// parseReceipts reads receipts, one JSON object a line, strictly.
func parseReceipts(data []byte) ([]Receipt, error) {
	var out []Receipt
	for line := range strings.Lines(string(data)) {
		if !strings.HasSuffix(line, "\n") {
			return out, fmt.Errorf("receipt %q is not a whole line", line)
		}
		line = strings.TrimSuffix(line, "\n")
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		var r Receipt
		if err := dec.Decode(&r); err != nil {
			return out, fmt.Errorf("receipt %q: %v", line, err)
		}
		r.Raw = line
		out = append(out, r)
	}
	return out, nil
}

// Transfer POSTs req as JSON to /transfer from the client namespace and
// returns the receipt; the body is streamed from a file, so a memo of some
// MiB with curl's --limit-rate keeps the transaction in flight a while. The
// reply must be exactly one receipt. The Transfer carries curl's statistics
// (SHA256 is of the body sent), filled in even with an error.
func (b *Bed) Transfer(req TransferRequest, curlArgs ...string) (*Receipt, *Transfer, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, nil, err
	}
	f, err := os.CreateTemp(b.Dir, "transfer-*.json")
	if err != nil {
		return nil, nil, err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, nil, err
	}
	args := append([]string{"-sS", "--max-time", "120", "-X", "POST", "-T", f.Name(),
		"-H", "Expect:", "-H", "Content-Type: application/json", "-w", statsFormat}, curlArgs...)
	args = append(args, URL("/transfer"))
	cmd := b.Cmd(b.Client(), "curl", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	tr := &Transfer{SHA256: sha256Hex(body)}
	st, err := tr.finish(runErr, stderr.String(), "POST /transfer")
	tr.Bytes = st.SizeUpload
	if err != nil {
		return nil, tr, fmt.Errorf("%w (reply %q)", err, truncate(stdout.String(), 200))
	}
	rs, perr := parseReceipts(stdout.Bytes())
	if perr != nil || len(rs) != 1 {
		return nil, tr, fmt.Errorf("POST /transfer: reply %q: want exactly one receipt (%v)", truncate(stdout.String(), 500), perr)
	}
	return &rs[0], tr, nil
}

// Ledger is server s's ledger as its file holds it (readable whatever state
// the server is in). Every line must be a whole receipt.
func (b *Bed) Ledger(s Server) []Receipt {
	b.t.Helper()
	path := filepath.Join(b.Dir, string(s), "ledger")
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		b.t.Fatal(err)
	}
	rs, err := parseReceipts(data)
	if err != nil {
		b.t.Fatalf("%s: %v", path, err)
	}
	return rs
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func sha256Hex(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

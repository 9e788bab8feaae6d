package testbed

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	osexec "os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Curl runs curl in the client namespace.
func (b *Bed) Curl(args ...string) (stdout, stderr string, err error) {
	cmd := b.Cmd(b.Client(), "curl", args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		return o.String(), e.String(), fmt.Errorf("curl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(e.String()))
	}
	return o.String(), e.String(), nil
}

// Transfer is the client's view of one curl transfer.
type Transfer struct {
	SHA256            string        // of the body received (Download) or sent (Upload)
	Bytes             int64         // body bytes received (Download) or sent (Upload)
	HTTPCode          int           // 0 when no response arrived
	NumConnects       int           // new connections curl had to open
	TimeTotal         time.Duration //
	TimeStartTransfer time.Duration // until the first response byte
	Reply             *BodyReply    // usweb's answer to an upload
	Stderr            string        // curl's messages
}

// BodyReply is usweb's JSON answer to POST /upload and /transfer.
type BodyReply struct {
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// curlStats is the part of curl's -w '%{json}' the harness reads.
type curlStats struct {
	HTTPCode          int     `json:"http_code"`
	NumConnects       int     `json:"num_connects"`
	SizeDownload      int64   `json:"size_download"`
	SizeUpload        int64   `json:"size_upload"`
	TimeTotal         float64 `json:"time_total"`
	TimeStartTransfer float64 `json:"time_starttransfer"`
	ExitCode          int     `json:"exitcode"`
	ErrorMsg          string  `json:"errormsg"`
}

// statsFormat makes curl print its statistics as JSON on stderr, so stdout
// carries only the body.
const statsFormat = "%{stderr}\n%{json}\n"

// parseCurlStats finds the statistics line in curl's stderr.
func parseCurlStats(stderr string) (curlStats, string, error) {
	var st curlStats
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "{") {
			err := json.Unmarshal([]byte(lines[i]), &st)
			msgs := strings.TrimSpace(strings.Join(lines[:i], "\n"))
			return st, msgs, err
		}
	}
	return st, strings.TrimSpace(stderr), errors.New("no curl statistics in its output")
}

func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

// curlURL maps a path to the VIP's URL; full URLs pass through.
func curlURL(path string) string {
	if strings.Contains(path, "://") {
		return path
	}
	return URL(path)
}

// Download fetches path (on the VIP, or a full URL) from the client namespace
// and hashes the body as it streams. curlArgs come after the harness's own
// (a --max-time there overrides the default of 120s). The result is filled
// in as far as the transfer got, even with an error; a status other than 2xx
// is an error.
func (b *Bed) Download(path string, curlArgs ...string) (*Transfer, error) {
	h := sha256.New()
	cw := &countWriter{w: h}
	stderr, runErr := b.get(path, "-", cw, curlArgs)
	tr := &Transfer{SHA256: hex.EncodeToString(h.Sum(nil)), Bytes: cw.n}
	_, err := tr.finish(runErr, stderr, "GET "+path)
	return tr, err
}

// DownloadDiscard is Download with the body left in the client (curl writes
// it to /dev/null), for rates above what the harness can hash: Bytes is
// curl's count, SHA256 is empty.
func (b *Bed) DownloadDiscard(path string, curlArgs ...string) (*Transfer, error) {
	stderr, runErr := b.get(path, "/dev/null", nil, curlArgs)
	tr := &Transfer{}
	st, err := tr.finish(runErr, stderr, "GET "+path)
	tr.Bytes = st.SizeDownload
	return tr, err
}

// get runs curl GET path in the client with the body to output (a file in
// the client's namespace, or "-" for stdout), and returns curl's stderr.
func (b *Bed) get(path, output string, stdout io.Writer, curlArgs []string) (string, error) {
	args := append([]string{"-sS", "--max-time", "120", "--output", output, "-w", statsFormat}, curlArgs...)
	args = append(args, curlURL(path))
	cmd := b.Cmd(b.Client(), "curl", args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = stdout, &stderr
	err := cmd.Run()
	return stderr.String(), err
}

// finish fills the statistics in, turns curl's and HTTP's failures into an
// error, and returns curl's statistics (zero if it printed none) for the
// caller's own.
func (tr *Transfer) finish(runErr error, stderr, what string) (curlStats, error) {
	st, msgs, perr := parseCurlStats(stderr)
	tr.Stderr = msgs
	tr.HTTPCode, tr.NumConnects = st.HTTPCode, st.NumConnects
	tr.TimeTotal, tr.TimeStartTransfer = seconds(st.TimeTotal), seconds(st.TimeStartTransfer)
	if perr != nil {
		st = curlStats{}
	}
	switch {
	case runErr != nil:
		return st, fmt.Errorf("curl %s: %v: %s", what, runErr, msgs)
	case perr != nil:
		return st, fmt.Errorf("curl %s: %v", what, perr)
	case st.HTTPCode < 200 || st.HTTPCode > 299:
		return st, fmt.Errorf("curl %s: HTTP status %d", what, st.HTTPCode)
	}
	return st, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// UploadBody returns a file of size deterministic pseudo-random bytes (made
// once per size in the state directory) and its sha256.
func (b *Bed) UploadBody(size int64) (path, sum string, err error) {
	path = filepath.Join(b.Dir, fmt.Sprintf("upload-%d.bin", size))
	if st, err := os.Stat(path); err != nil || st.Size() != size {
		if err := writeDeterministic(path, size); err != nil {
			return "", "", err
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", "", err
	}
	return path, hex.EncodeToString(h.Sum(nil)), nil
}

func writeDeterministic(path string, size int64) error {
	// A temporary name of its own, as concurrent uploads may race to make it.
	f, err := os.CreateTemp(filepath.Dir(path), "upload-*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	// Seeded by the size: the same body for the same size in every run.
	src := rand.NewChaCha8([32]byte{byte(size), byte(size >> 8), byte(size >> 16), byte(size >> 24), byte(size >> 32)})
	w := bufio.NewWriterSize(f, 1<<20)
	_, err = io.CopyN(w, src, size)
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// Upload POSTs size deterministic bytes to path (e.g. "/upload") from the
// client namespace. Transfer.SHA256 is the client-side hash of what was sent;
// Transfer.Reply is the server's account of what it received.
func (b *Bed) Upload(path string, size int64, curlArgs ...string) (*Transfer, error) {
	body, sum, err := b.UploadBody(size)
	if err != nil {
		return nil, err
	}
	// -T streams the file with a Content-Length (--data-binary would load it
	// into memory); "Expect:" avoids curl's 100-continue pause.
	args := append([]string{"-sS", "--max-time", "120", "-X", "POST", "-T", body,
		"-H", "Expect:", "-H", "Content-Type: application/octet-stream", "-w", statsFormat}, curlArgs...)
	args = append(args, curlURL(path))
	cmd := b.Cmd(b.Client(), "curl", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	tr := &Transfer{SHA256: sum}
	st, err := tr.finish(runErr, stderr.String(), "POST "+path)
	tr.Bytes = st.SizeUpload
	var reply BodyReply
	if jerr := json.Unmarshal(stdout.Bytes(), &reply); jerr == nil {
		tr.Reply = &reply
	} else if err == nil {
		err = fmt.Errorf("POST %s: reply %q is not usweb's JSON: %v", path, stdout.Bytes(), jerr)
	}
	return tr, err
}

// WrkResult is wrk's summary.
type WrkResult struct {
	Requests     int64
	Duration     time.Duration
	RequestsPerS float64
	SocketErrors SocketErrors
	Non2xx       int64 // "Non-2xx or 3xx responses"
	Output       string
}

// SocketErrors are wrk's socket error counts.
type SocketErrors struct{ Connect, Read, Write, Timeout int64 }

// Total is the sum of the socket errors.
func (s SocketErrors) Total() int64 { return s.Connect + s.Read + s.Write + s.Timeout }

// Wrk runs wrk from the client namespace against path on the VIP for d
// (whole seconds, rounded up: wrk takes no finer unit).
func (b *Bed) Wrk(conns int, d time.Duration, path string, extraArgs ...string) (*WrkResult, error) {
	if _, err := osexec.LookPath("wrk"); err != nil {
		return nil, errors.New("wrk is not installed: apt-get install -y wrk")
	}
	threads := min(conns, 2) // the VM has two cores
	args := []string{"-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns),
		"-d", fmt.Sprintf("%ds", max(1, int((d+time.Second-1)/time.Second))), "--timeout", "2s"}
	args = append(append(args, extraArgs...), curlURL(path))
	out, err := b.Output(b.Client(), "wrk", args...)
	if err != nil {
		return nil, err
	}
	return parseWrk(out)
}

var (
	wrkRequests = regexp.MustCompile(`(\d+) requests in ([\d.]+)(us|ms|s|m|h),`)
	wrkSocket   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkRate     = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
)

func parseWrk(out string) (*WrkResult, error) {
	r := &WrkResult{Output: out}
	m := wrkRequests.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("wrk: no request count in output:\n%s", out)
	}
	r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	if d, err := time.ParseDuration(m[2] + m[3]); err == nil {
		r.Duration = d
	}
	if m := wrkSocket.FindStringSubmatch(out); m != nil {
		n := make([]int64, 4)
		for i := range n {
			n[i], _ = strconv.ParseInt(m[i+1], 10, 64)
		}
		r.SocketErrors = SocketErrors{Connect: n[0], Read: n[1], Write: n[2], Timeout: n[3]}
	}
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		r.Non2xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := wrkRate.FindStringSubmatch(out); m != nil {
		r.RequestsPerS, _ = strconv.ParseFloat(m[1], 64)
	}
	return r, nil
}

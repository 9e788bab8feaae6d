package testbed

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Nstat is "nstat -az" in namespace ns: every kernel SNMP and netstat
// counter by name (IpInReceives, TcpExtTSEcrRejected, ...).
func (b *Bed) Nstat(ns string) map[string]uint64 {
	b.t.Helper()
	cmd := b.Cmd(ns, "nstat", "-az")
	// nstat keeps a history file; one per namespace keeps runs apart.
	cmd.Env = append(os.Environ(), "NSTAT_HISTORY="+filepath.Join(b.Dir, "nstat-"+ns))
	out, err := cmd.Output()
	if err != nil {
		b.t.Fatalf("[%s] nstat -az: %v", ns, err)
	}
	m, err := parseNstat(string(out))
	if err != nil {
		b.t.Fatalf("[%s] nstat -az: %v", ns, err)
	}
	return m
}

func parseNstat(out string) (map[string]uint64, error) {
	m := map[string]uint64{}
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		v, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("line %q: %w", strings.TrimSpace(line), err)
		}
		m[f[0]] = v
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("no counters in %q", out)
	}
	return m, nil
}

// AccessEntry is one request a server logged (nginx's access.log, or usweb's
// "req" lines when usweb serves alone; usweb counts body bytes only in
// RequestLength).
type AccessEntry struct {
	Remote        string
	Method        string
	Status        int
	BodyBytes     int64 // response body bytes sent
	RequestLength int64
	Connection    uint64 // connection serial number
	ConnRequests  uint64 // requests made so far on that connection
	RequestTime   time.Duration
	URI           string
}

// AccessLog is the requests server s has logged so far. A server logs a
// request once its reply is sent, so the backup's entries can trail what the
// client has seen by a moment.
func (b *Bed) AccessLog(s Server) []AccessEntry {
	b.t.Helper()
	path, lines := b.requestLines(s)
	var out []AccessEntry
	for _, l := range lines {
		e, err := parseAccess(l)
		if err != nil {
			b.t.Fatalf("%s: %v", path, err)
		}
		out = append(out, e)
	}
	return out
}

// requestLines returns server s's request log and its request lines, each
// without the prefix that marks it in usweb's log.
func (b *Bed) requestLines(s Server) (path string, lines []string) {
	b.t.Helper()
	path, prefix := filepath.Join(b.Dir, string(s), "access.log"), ""
	if !b.Nginx {
		path, prefix = filepath.Join(b.Dir, string(s), "usweb.log"), "req "
	}
	all, err := readLines(path)
	if err != nil {
		b.t.Fatal(err)
	}
	for _, l := range all {
		if strings.HasPrefix(l, prefix) {
			lines = append(lines, strings.TrimPrefix(l, prefix))
		}
	}
	return path, lines
}

// RequestsLogged counts the requests server s has logged, without parsing
// them: the bench reads it around runs of hundreds of thousands.
func (b *Bed) RequestsLogged(s Server) int {
	b.t.Helper()
	_, lines := b.requestLines(s)
	return len(lines)
}

// parseAccess reads the testbed's log format:
// remote method status body_bytes request_length connection connection_requests request_time uri
func parseAccess(line string) (AccessEntry, error) {
	f := strings.SplitN(line, " ", 9)
	if len(f) != 9 {
		return AccessEntry{}, fmt.Errorf("access log line %q: want 9 fields", line)
	}
	var e AccessEntry
	var errs [7]error
	e.Remote, e.Method, e.URI = f[0], f[1], f[8]
	e.Status, errs[0] = strconv.Atoi(f[2])
	e.BodyBytes, errs[1] = strconv.ParseInt(f[3], 10, 64)
	e.RequestLength, errs[2] = strconv.ParseInt(f[4], 10, 64)
	e.Connection, errs[3] = strconv.ParseUint(f[5], 10, 64)
	e.ConnRequests, errs[4] = strconv.ParseUint(f[6], 10, 64)
	var secs float64
	secs, errs[5] = strconv.ParseFloat(f[7], 64)
	e.RequestTime = time.Duration(secs * float64(time.Second))
	for _, err := range errs {
		if err != nil {
			return AccessEntry{}, fmt.Errorf("access log line %q: %w", line, err)
		}
	}
	return e, nil
}

// UploadEntry is a whole request body usweb received and hashed.
type UploadEntry struct {
	Kind   string // "upload" or "transfer"
	Bytes  int64
	SHA256 string
}

// UploadLog is the complete bodies server s received (POST /upload and
// /transfer), in order. Bodies cut short are not listed.
func (b *Bed) UploadLog(s Server) []UploadEntry {
	b.t.Helper()
	path := filepath.Join(b.Dir, string(s), "usweb.log")
	lines, err := readLines(path)
	if err != nil {
		b.t.Fatal(err)
	}
	out, err := parseUploads(lines)
	if err != nil {
		b.t.Fatalf("%s: %v", path, err)
	}
	return out
}

// WaitUploadLog polls UploadLog(s) until it has at least n entries, for up
// to timeout, and fails the test with what it has otherwise. The backup's
// reply is absorbed by the gateway, so its log can trail the client's view.
func (b *Bed) WaitUploadLog(s Server, n int, timeout time.Duration) []UploadEntry {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := b.UploadLog(s)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("%s logged %d whole bodies after %v, want %d: %+v", s, len(got), timeout, n, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func parseUploads(lines []string) ([]UploadEntry, error) {
	var out []UploadEntry
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 3 || (f[0] != "upload" && f[0] != "transfer") {
			continue
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("line %q: %w", l, err)
		}
		out = append(out, UploadEntry{Kind: f[0], Bytes: n, SHA256: f[2]})
	}
	return out, nil
}

func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil // nothing logged yet
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines, sc.Err()
}

// WWW is the content directory both servers serve.
func (b *Bed) WWW() string { return filepath.Join(b.Dir, "www") }

// SHA256 is the sha256 of a content file ("big.bin", ...) from SHA256SUMS.
func (b *Bed) SHA256(file string) string {
	b.t.Helper()
	lines, err := readLines(filepath.Join(b.WWW(), "SHA256SUMS"))
	if err != nil {
		b.t.Fatal(err)
	}
	for _, l := range lines {
		if f := strings.Fields(l); len(f) == 2 && strings.TrimPrefix(f[1], "*") == file {
			return f[0]
		}
	}
	b.t.Fatalf("%s is not in %s/SHA256SUMS", file, b.WWW())
	return ""
}

// Fault injection, as an operator meets faults (DESIGN.md §5).

// serverPids are the pids of every process in server s's namespace.
func (b *Bed) serverPids(s Server) []string {
	b.t.Helper()
	out, err := runHost("ip", "netns", "pids", b.NS(s))
	if err != nil {
		b.t.Fatal(err)
	}
	pids := strings.Fields(out)
	if len(pids) == 0 {
		b.t.Fatalf("no processes in %s", b.NS(s))
	}
	return pids
}

func (b *Bed) signalServer(s Server, sig string) {
	b.t.Helper()
	if _, err := runHost("kill", append([]string{"-" + sig}, b.serverPids(s)...)...); err != nil {
		b.t.Fatal(err)
	}
}

// KillServer crashes server s: SIGKILL to every process in its namespace
// (nginx master and worker, usweb), so its kernel answers with RSTs.
func (b *Bed) KillServer(s Server) { b.t.Helper(); b.signalServer(s, "KILL") }

// StopServer hangs server s (SIGSTOP): its kernel still acknowledges, its
// web server no longer answers.
func (b *Bed) StopServer(s Server) { b.t.Helper(); b.signalServer(s, "STOP") }

// ContServer resumes a server stopped by StopServer.
func (b *Bed) ContServer(s Server) { b.t.Helper(); b.signalServer(s, "CONT") }

// RestartServer starts server s's web servers again (after KillServer).
func (b *Bed) RestartServer(s Server) {
	b.t.Helper()
	usweb := binary(b.t, b.Root, "usweb")
	if out, err := b.script(usweb, "restart-server", string(s)); err != nil {
		b.t.Fatalf("restart-server %s: %v\n%s", s, err, out)
	}
}

// FixSendBuffer restarts server s's nginx with its sockets' send buffers
// fixed at size (nginx's listen sndbuf=, e.g. "8m"; the kernel doubles it)
// instead of the kernel's autotuning, which keeps them small on the bed. The
// test's cleanup restores the autotuning.
func (b *Bed) FixSendBuffer(s Server, size string) {
	b.t.Helper()
	usweb := binary(b.t, b.Root, "usweb")
	if out, err := b.script(usweb, "restart-server", string(s), "--sndbuf", size); err != nil {
		b.t.Fatalf("restart-server %s --sndbuf %s: %v\n%s", s, size, err, out)
	}
	b.t.Cleanup(func() {
		if out, err := b.script(usweb, "restart-server", string(s), "--sndbuf", "0"); err != nil {
			b.t.Errorf("restart-server %s --sndbuf 0: %v\n%s", s, err, out)
		}
	})
}

// Resize restarts both servers so that each may hold n connections (see
// Options.MaxConns): nginx then runs a worker per 15000 of them. The bench
// measures its rates with the servers as Up built them and resizes only for
// the idle-flow figure, so that no rate is measured with seven workers per
// server contending for two cores.
func (b *Bed) Resize(n int) error {
	usweb := binary(b.t, b.Root, "usweb")
	for _, s := range []Server{Pri, Bak} {
		if out, err := b.script(usweb, "restart-server", string(s), "--max-conns", strconv.Itoa(n)); err != nil {
			return fmt.Errorf("resizing server %s to %d connections: %v\n%s", s, n, err, out)
		}
	}
	b.opts.MaxConns = n
	return nil
}

// LinkDown silently loses server s: its port on the LAN bridge goes down,
// so nothing reaches it and nothing comes back, as when a host dies.
func (b *Bed) LinkDown(s Server) {
	b.t.Helper()
	b.MustRun(b.LAN(), "ip", "link", "set", string(s), "down")
}

// LinkUp brings server s's LAN port back and waits until the bridge
// forwards on it again (the kernel notices the carrier with a delay).
func (b *Bed) LinkUp(s Server) {
	b.t.Helper()
	b.MustRun(b.LAN(), "ip", "link", "set", string(s), "up")
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := b.Output(b.LAN(), "bridge", "link", "show", "dev", string(s))
		if err == nil && strings.Contains(out, "state forwarding") {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("LAN port %s not forwarding 5s after link up: %s %v", s, out, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Loss drops each TCP packet entering and leaving namespace ns with the
// given probability (iptables statistic match: this kernel has no netem).
// Loss(ns, 0) removes it.
func (b *Bed) Loss(ns string, probability float64) {
	b.t.Helper()
	RequireTool(b.t, "iptables")
	for _, chain := range []string{"INPUT", "OUTPUT"} {
		b.MustRun(ns, "iptables", "-F", chain)
		if probability > 0 {
			b.MustRun(ns, "iptables", "-A", chain, "-p", "tcp", "-m", "statistic", "--mode", "random",
				"--probability", strconv.FormatFloat(probability, 'f', -1, 64), "-j", "DROP")
		}
	}
}

// LossDropped is how many packets random-loss rules (Loss's, or a test's
// own iptables statistic rule) have dropped in namespace ns so far (0 when
// none are in place).
func (b *Bed) LossDropped(ns string) int64 {
	b.t.Helper()
	var n int64
	for _, chain := range []string{"INPUT", "OUTPUT"} {
		out, err := b.Output(ns, "iptables", "-nvxL", chain)
		if err != nil {
			b.t.Fatal(err)
		}
		for line := range strings.Lines(out) {
			f := strings.Fields(line)
			if len(f) > 2 && f[2] == "DROP" && strings.Contains(line, "statistic mode random") {
				v, err := strconv.ParseInt(f[0], 10, 64)
				if err != nil {
					b.t.Fatalf("iptables counters %q: %v", line, err)
				}
				n += v
			}
		}
	}
	return n
}

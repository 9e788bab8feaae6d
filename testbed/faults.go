package testbed

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// For returns a view of the bed whose methods report to t, a subtest of the
// test that called Up: a subtest must not fail its parent, and what it
// starts (gateway, captures) should stop when it ends. The bed itself is
// still torn down by Up's test.
func (b *Bed) For(t testing.TB) *Bed {
	c := *b
	c.t = t
	return &c
}

// Fault is a class of server failure, as an operator meets it (DESIGN.md §5).
type Fault int

const (
	// HostLoss: the server's port on the LAN bridge goes down. Nothing
	// reaches it and nothing comes back, not even a RST: only probes can
	// tell.
	HostLoss Fault = iota
	// Crash: kill -9 of the web servers (nginx and usweb). The host lives,
	// so its kernel answers the flows' next segments with RSTs.
	Crash
	// Hang: SIGSTOP of the web servers. The kernel still completes
	// handshakes and acknowledges requests; no reply ever comes.
	Hang
)

// Faults lists every fault class, for table-driven tests.
var Faults = []Fault{HostLoss, Crash, Hang}

func (f Fault) String() string {
	switch f {
	case HostLoss:
		return "host-loss"
	case Crash:
		return "crash"
	case Hang:
		return "hang"
	}
	return fmt.Sprintf("Fault(%d)", int(f))
}

// Injected is a fault in place on one server.
type Injected struct {
	Fault  Fault
	Server Server
	At     time.Time // when the fault took effect

	b        *Bed
	repaired bool
}

// Inject applies fault f to server s now. Repair undoes it; it is also
// registered with the test's cleanup, so a failing test leaves the bed
// whole for the next.
func (b *Bed) Inject(f Fault, s Server) *Injected {
	b.t.Helper()
	switch f {
	case HostLoss:
		b.LinkDown(s)
	case Crash:
		b.KillServer(s)
	case Hang:
		b.StopServer(s)
	default:
		b.t.Fatalf("unknown fault %v", f)
	}
	in := &Injected{Fault: f, Server: s, At: time.Now(), b: b}
	b.t.Cleanup(in.Repair)
	return in
}

// Repair undoes the fault and returns once the server answers HTTP again:
// the LAN port comes back up, a crashed server is restarted, a hung one is
// continued and then restarted, so that it does not go on to answer requests
// its clients have long given up on. Idempotent.
func (in *Injected) Repair() {
	if in.repaired {
		return
	}
	in.repaired = true
	b := in.b
	b.t.Helper()
	switch in.Fault {
	case HostLoss:
		b.LinkUp(in.Server)
	case Crash:
		b.RestartServer(in.Server)
	case Hang:
		b.ContServer(in.Server)
		b.RestartServer(in.Server)
	}
	if err := b.WaitHTTP(in.Server, 5*time.Second); err != nil {
		b.t.Fatalf("%s after repairing %s: %v", in.Server, in.Fault, err)
	}
}

// WaitHTTP polls server s directly from the gateway host until it serves
// /index.html.
func (b *Bed) WaitHTTP(s Server, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := b.Run(b.Gateway(), "curl", "-fsS", "-o", "/dev/null", "--max-time", "1", "http://"+s.IP()+"/index.html")
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Running is a client transfer running in the background.
type Running struct {
	Started time.Time
	done    chan struct{}
	tr      *Transfer
	err     error
}

// Background runs a client transfer (a closure over Download, Upload, ...)
// on its own goroutine, so that a fault can be injected while it runs; rate
// limit it (curl --limit-rate) so that it is still running then.
func (b *Bed) Background(run func() (*Transfer, error)) *Running {
	r := &Running{Started: time.Now(), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.tr, r.err = run()
	}()
	return r
}

// Done reports whether the transfer has ended.
func (r *Running) Done() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// Wait waits for the transfer to end and returns its result.
func (r *Running) Wait() (*Transfer, error) {
	<-r.done
	return r.tr, r.err
}

// DownloadAll fetches paths in order with one curl, which keeps its
// connection for the next path (with --rate, requests come that far apart,
// so the connection idles in between). w, if not nil, gets the bodies.
// SHA256 and Bytes cover all the bodies; NumConnects and TimeTotal add up
// over the transfers; HTTPCode is the first that is not 2xx, or the last.
func (b *Bed) DownloadAll(w io.Writer, paths []string, curlArgs ...string) (*Transfer, error) {
	args := append([]string{"-sS", "--max-time", "120", "--output", "-", "-w", statsFormat}, curlArgs...)
	for _, p := range paths {
		args = append(args, curlURL(p))
	}
	cmd := b.Cmd(b.Client(), "curl", args...)
	h := sha256.New()
	var stderr bytes.Buffer
	sink := io.Writer(h)
	if w != nil {
		sink = io.MultiWriter(h, w)
	}
	cw := &countWriter{w: sink}
	cmd.Stdout, cmd.Stderr = cw, &stderr
	runErr := cmd.Run()
	tr := &Transfer{SHA256: hex.EncodeToString(h.Sum(nil)), Bytes: cw.n}
	what := "GET " + strings.Join(paths, " ")
	stats, msgs := allCurlStats(stderr.String())
	tr.Stderr = msgs
	for _, st := range stats {
		tr.NumConnects += st.NumConnects
		tr.TimeTotal += seconds(st.TimeTotal)
		if tr.HTTPCode == 0 || tr.HTTPCode/100 == 2 {
			tr.HTTPCode = st.HTTPCode
		}
	}
	switch {
	case runErr != nil:
		return tr, fmt.Errorf("curl %s: %v: %s", what, runErr, msgs)
	case len(stats) != len(paths):
		return tr, fmt.Errorf("curl %s: statistics of %d transfers, want %d", what, len(stats), len(paths))
	case tr.HTTPCode/100 != 2:
		return tr, fmt.Errorf("curl %s: HTTP status %d", what, tr.HTTPCode)
	}
	return tr, nil
}

// allCurlStats finds every transfer's statistics line in curl's stderr.
func allCurlStats(stderr string) ([]curlStats, string) {
	var stats []curlStats
	var msgs []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, "{") {
			if st, _, err := parseCurlStats(l); err == nil {
				stats = append(stats, st)
				continue
			}
		}
		if l = strings.TrimSpace(l); l != "" {
			msgs = append(msgs, l)
		}
	}
	return stats, strings.Join(msgs, "\n")
}

// ContentSHA256 is the sha256 of the named content files concatenated, as
// DownloadAll hashes them.
func (b *Bed) ContentSHA256(files ...string) string {
	b.t.Helper()
	h := sha256.New()
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(b.WWW(), f))
		if err != nil {
			b.t.Fatal(err)
		}
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// OwnFile is the path of server s's own copy of name, served as /own/<name>
// (scripts/testbed.sh own_content): content that differs between the servers.
func (b *Bed) OwnFile(s Server, name string) string {
	return filepath.Join(b.Dir, "www-"+string(s), name)
}

// Failover asks the gateway for a manual failover ("understudy failover").
func (b *Bed) Failover() error {
	bin := binary(b.t, b.Root, "understudy")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "failover", "--control", b.ControlSocket()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("understudy failover: %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// serverStatusNames are the gateway's names of the servers, for a status
// whose entries have no address.
var serverStatusNames = map[Server]string{Pri: "primary", Bak: "backup"}

// ServerState is server s's role ("active", "standby", or the gateway's word
// for out of service) and health ("up", "down") in a decoded status; empty
// where the status does not say.
func ServerState(st map[string]any, s Server) (role, health string) {
	list, _ := st["servers"].([]any)
	for _, e := range list {
		m, _ := e.(map[string]any)
		addr, _ := m["addr"].(string)
		name, _ := m["name"].(string)
		if addr == s.IP() || (addr == "" && name == serverStatusNames[s]) {
			role, _ = m["role"].(string)
			health, _ = m["health"].(string)
			return role, health
		}
	}
	return "", ""
}

// WaitServerState polls the gateway's status until server s has role and
// health, for up to timeout; the error tells what the status last said.
func (b *Bed) WaitServerState(s Server, role, health string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := b.Status()
		var r, h string
		if err == nil {
			r, h = ServerState(st, s)
			if r == role && h == health {
				return nil
			}
		}
		if time.Now().After(deadline) {
			if err != nil {
				return err
			}
			return fmt.Errorf("%s is %q/%q after %v, want %q/%q; servers: %v", s, r, h, timeout, role, health, st["servers"])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// LastFailover is the status' "last_failover" object (at, cause,
// detected_ms, flows_moved, max_stall_ms), or nil when there is none.
func LastFailover(st map[string]any) map[string]any {
	m, _ := st["last_failover"].(map[string]any)
	return m
}

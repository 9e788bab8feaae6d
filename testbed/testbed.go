// Package testbed is the Go harness for understudy's integration tests. It
// brings up the network-namespace testbed of scripts/testbed.sh (client,
// gateway host, LAN bridge, primary and backup web servers), starts the
// gateway, drives real clients (curl, wrk), captures packets on the client
// side, reads the servers' logs and injects faults.
//
// Everything needs root; Up skips the test otherwise. One Bed exists at a
// time per prefix, across processes: Up waits for the previous Bed to be torn
// down.
//
// A typical integration test:
//
//	b := testbed.Up(t, testbed.Options{})
//	b.StartGateway()
//	capture := b.StartTcpdump(b.Client(), "eth0", "")
//	done := make(chan error)
//	go func() {
//		tr, err := b.Download("/big.bin", "--limit-rate", "20M")
//		if err == nil && tr.SHA256 != want {
//			err = fmt.Errorf("sha256 %s, want %s", tr.SHA256, want)
//		}
//		done <- err
//	}()
//	time.Sleep(time.Second)
//	b.KillServer(testbed.Pri)
//	if err := <-done; err != nil { t.Fatal(err) }
//	if rsts := capture.Stop().ClientRSTs(); len(rsts) > 0 { t.Fatalf("RSTs:\n%s", rsts) }
//
// Curl, Download, Upload, Wrk, Status and StatusJSON return errors and may
// run on other goroutines; the other methods fail the test themselves and
// belong on the test's goroutine.
package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Addresses and interfaces of the topology (scripts/testbed.sh).
const (
	VIP             = "10.77.0.100"
	Port            = 80
	ClientIP        = "10.77.1.2"
	GatewayClientIP = "10.77.1.1"
	GatewayServerIP = "10.77.2.1"
	PrimaryIP       = "10.77.2.10"
	BackupIP        = "10.77.2.11"
	ClientIface     = "cli0" // the gateway's client-side interface
	ServerIface     = "srv0" // the gateway's server-side interface
)

// Server names one of the two web servers; it is also the name of its port
// on the LAN bridge and of its state directory.
type Server string

// The two servers.
const (
	Pri Server = "pri"
	Bak Server = "bak"
)

// IP is the server's address.
func (s Server) IP() string {
	if s == Bak {
		return BackupIP
	}
	return PrimaryIP
}

// defaultMaxConns is what scripts/testbed.sh gives each nginx when
// Options.MaxConns is 0: one worker.
const defaultMaxConns = 4096

// Options choose what Up builds.
type Options struct {
	// Kernel installs the host-kernel reference: nftables DNAT of the VIP to
	// the primary in the gateway namespace, so the VIP works with no gateway.
	Kernel bool
	// Huge also creates the 256 MiB huge.bin.
	Huge bool
	// NoNginx serves everything with usweb even when nginx is installed.
	NoNginx bool
	// Offloads leaves veth's TSO/GSO and checksum offloads on (the
	// gateway's --keep-offloads); by default they are off everywhere.
	Offloads bool
	// MaxConns is the connections each nginx may hold (default
	// defaultMaxConns).
	MaxConns int
}

// Bed is one running testbed.
type Bed struct {
	Prefix string // namespace prefix (env US_PREFIX, default "ust")
	Dir    string // state directory (env US_DIR, default /tmp/understudy-testbed-<prefix>)
	Root   string // repository root
	Nginx  bool   // nginx fronts usweb on the servers (else usweb serves :80)

	t    testing.TB
	opts Options
}

// SkipMessage is the reason tests skip when not run as root.
const SkipMessage = "needs root: integration tests build network namespaces; run as root (CI does)"

// tools maps each external command the harness uses to its Debian package.
var tools = map[string]string{
	"ip": "iproute2", "bridge": "iproute2", "nstat": "iproute2",
	"ethtool": "ethtool", "curl": "curl", "wrk": "wrk", "tcpdump": "tcpdump",
	"nft": "nftables", "iptables": "iptables", "bash": "bash", "go": "golang-go",
}

// RequireTool fails the test when name is not installed, saying how to get it.
func RequireTool(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		pkg := tools[name]
		if pkg == "" {
			pkg = name
		}
		t.Fatalf("%s is not installed: apt-get install -y %s", name, pkg)
	}
}

var (
	activeMu  sync.Mutex
	activeBed testing.TB // test holding the bed lock, to catch a second Up in one test
)

// lockBed takes an exclusive flock on a file named after the prefix. Beds
// with one prefix share namespace names, so only one may exist at a time:
// the lock serialises them across test processes (go test ./... runs
// packages in parallel) as well as within one; the kernel drops it when a
// process dies.
func lockBed(prefix string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "understudy-testbed-"+prefix+".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking the testbed: %w", err)
	}
	return func() { f.Close() }, nil
}

// Up builds the testbed and registers its teardown with t.Cleanup.
func Up(t testing.TB, opts Options) *Bed {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip(SkipMessage)
	}
	for _, name := range []string{"bash", "ip", "bridge", "ethtool", "curl"} {
		RequireTool(t, name)
	}
	if opts.Kernel {
		RequireTool(t, "nft")
	}
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	usweb := binary(t, root, "usweb")

	b := &Bed{
		Prefix: envOr("US_PREFIX", "ust"),
		Root:   root,
		t:      t,
		opts:   opts,
	}
	b.Dir = envOr("US_DIR", "/tmp/understudy-testbed-"+b.Prefix)

	activeMu.Lock()
	if activeBed == t {
		activeMu.Unlock()
		t.Fatal("testbed.Up called twice in one test")
	}
	activeMu.Unlock()
	unlock, err := lockBed(b.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	activeMu.Lock()
	activeBed = t
	activeMu.Unlock()

	// Registered before "up" runs so that a half-built bed is torn down too.
	t.Cleanup(func() {
		defer func() {
			activeMu.Lock()
			activeBed = nil
			activeMu.Unlock()
			unlock()
		}()
		if t.Failed() {
			b.logDiagnostics()
		}
		if out, err := b.script(usweb, "down"); err != nil {
			t.Errorf("testbed down: %v\n%s", err, out)
		}
	})

	args := []string{"up"}
	if opts.Kernel {
		args = append(args, "--mode", "kernel")
	}
	if opts.Huge {
		args = append(args, "--huge")
	}
	if opts.NoNginx {
		args = append(args, "--no-nginx")
	}
	if opts.Offloads {
		args = append(args, "--offloads")
	}
	if opts.MaxConns > 0 {
		args = append(args, "--max-conns", strconv.Itoa(opts.MaxConns))
	}
	start := time.Now()
	out, err := b.script(usweb, args...)
	if err != nil {
		t.Fatalf("testbed up: %v\n%s", err, out)
	}
	ws, _ := os.ReadFile(filepath.Join(b.Dir, "webserver"))
	b.Nginx = strings.TrimSpace(string(ws)) == "nginx"
	t.Logf("testbed up in %v (prefix %s, dir %s, nginx %v)", time.Since(start).Round(time.Millisecond), b.Prefix, b.Dir, b.Nginx)
	return b
}

func (b *Bed) script(usweb string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(b.Root, "scripts", "testbed.sh")}, args...)...)
	cmd.Env = append(os.Environ(), "US_PREFIX="+b.Prefix, "US_DIR="+b.Dir, "US_USWEB="+usweb)
	return cmd.CombinedOutput()
}

// logDiagnostics logs the tails of the servers' and the gateway's logs, and
// the gateway's flow resets, unprotected flows and errors from before its tail: a reset
// minutes into a soak is long out of the tail by its end.
func (b *Bed) logDiagnostics() {
	if lines := fileGrep(filepath.Join(b.Dir, "gateway.log"), 60, `msg="flow reset"`, `msg="flow unprotected"`, "level=ERROR", "suppressed"); lines != "" {
		b.t.Logf("--- gateway.log (flow resets and errors, first 60):\n%s", lines)
	}
	for _, f := range []string{"gateway.log", "pri/error.log", "pri/usweb.out", "bak/error.log", "bak/usweb.out"} {
		if tail := fileTail(filepath.Join(b.Dir, f), 30); tail != "" {
			b.t.Logf("--- %s (tail):\n%s", f, tail)
		}
	}
}

// fileGrep returns the first n lines of path that contain any of subs.
func fileGrep(path string, n int, subs ...string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var out []string
	for line := range strings.Lines(string(data)) {
		if len(out) == n {
			break
		}
		for _, sub := range subs {
			if strings.Contains(line, sub) {
				out = append(out, strings.TrimRight(line, "\n"))
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// RepoRoot walks up from the working directory to the directory holding go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("testbed: go.mod not found above the working directory")
		}
		dir = parent
	}
}

var (
	buildMu   sync.Mutex
	buildDone = map[string]error{}
)

// binary returns the path of bin/<name>, built from ./cmd/<name> once per
// process (go's build cache makes that cheap), or taken as is from $US_BIN.
func binary(t testing.TB, root, name string) string {
	t.Helper()
	return build(t, root, name, "./cmd/"+name)
}

// tool is the path of bin/<name> built from the harness's own package pkg
// (like binary, but never taken from $US_BIN).
func (b *Bed) tool(name, pkg string) string {
	b.t.Helper()
	return build(b.t, b.Root, name, pkg)
}

func build(t testing.TB, root, name, pkg string) string {
	t.Helper()
	if dir := os.Getenv("US_BIN"); dir != "" && strings.HasPrefix(pkg, "./cmd/") {
		path := filepath.Join(dir, name)
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("US_BIN=%s: %v", dir, err)
		}
		return path
	}
	out := filepath.Join(root, "bin", name)
	buildMu.Lock()
	defer buildMu.Unlock()
	err, done := buildDone[name]
	if !done {
		RequireTool(t, "go")
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = root
		if msg, e := cmd.CombinedOutput(); e != nil {
			err = fmt.Errorf("go build %s: %v\n%s", pkg, e, msg)
		}
		buildDone[name] = err
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Namespace names.

func (b *Bed) Client() string  { return b.Prefix + "-cli" }
func (b *Bed) Gateway() string { return b.Prefix + "-gw" }
func (b *Bed) LAN() string     { return b.Prefix + "-lan" }
func (b *Bed) Primary() string { return b.Prefix + "-pri" }
func (b *Bed) Backup() string  { return b.Prefix + "-bak" }

// NS is the namespace of server s.
func (b *Bed) NS(s Server) string { return b.Prefix + "-" + string(s) }

// URL is the client's URL of path on the VIP.
func URL(path string) string { return "http://" + VIP + path }

// SetOffloads turns TSO and GSO on or off on every veth of the bed (what
// scripts/testbed.sh up --offloads leaves on), and with them checksum
// offload and scatter-gather, which TSO needs and understudy without
// --keep-offloads turns off on the gateway's interfaces: with them on,
// senders hand veth 64 KiB super-frames that pass whole. The LAN's bridge
// follows its ports.
func (b *Bed) SetOffloads(on bool) error {
	state := "off"
	if on {
		state = "on"
	}
	for _, ns := range []string{b.Client(), b.Gateway(), b.LAN(), b.Primary(), b.Backup()} {
		out, err := b.Output(ns, "ip", "-o", "link", "show", "type", "veth")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			dev, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			args := []string{"-K", dev, "tso", state, "gso", state}
			if on {
				// What a gateway that ran without --keep-offloads turned
				// off on its interfaces besides: TSO needs them.
				args = append(args, "tx", "on", "rx", "on", "sg", "on")
			}
			if err := b.Run(ns, "ethtool", args...); err != nil {
				return fmt.Errorf("offloads %s on %s in %s: %w", state, dev, ns, err)
			}
		}
	}
	return nil
}

// Cmd is name args... run inside namespace ns.
func (b *Bed) Cmd(ns, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// Run runs a command in ns; its error names the command and carries its output.
func (b *Bed) Run(ns, name string, args ...string) error {
	_, err := b.Output(ns, name, args...)
	return err
}

// Output runs a command in ns and returns its stdout; its error names the
// command and carries its stderr.
func (b *Bed) Output(ns, name string, args ...string) (string, error) {
	cmd := b.Cmd(ns, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("[%s] %s %s: %v: %s", ns, name, strings.Join(args, " "), err,
			strings.TrimSpace(stderr.String()+"\n"+stdout.String()))
	}
	return stdout.String(), nil
}

// MustRun is Run failing the test on error.
func (b *Bed) MustRun(ns, name string, args ...string) {
	b.t.Helper()
	if err := b.Run(ns, name, args...); err != nil {
		b.t.Fatal(err)
	}
}

// fileTail is the last n lines of a file, or "" when unreadable.
func fileTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// runHost runs a command in the harness's own namespace and returns its stdout.
func runHost(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

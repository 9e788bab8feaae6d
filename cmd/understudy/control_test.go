package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"understudy/datapath"
	"understudy/pcaptap"
)

// Every control command fails in one clear line when no gateway answers:
// no socket at all, or one a crashed gateway left behind.
func TestControlCommandsWithoutDaemon(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.sock")
	stale := staleSocket(t, filepath.Join(dir, "stale.sock"))

	commands := [][]string{{"status"}, {"status", "--json"}, {"flows"}, {"flows", "--json"}, {"failover"},
		{"failover", "--to", "backup"}, {"drain", "primary"}, {"drain", "--undo", "backup"}, {"undrain", "primary"}}
	sockets := []struct {
		name, path, want string
	}{
		{"missing", missing, "the socket does not exist; is `understudy run` running"},
		{"stale", stale, "nothing listens on the socket"},
	}
	for _, sock := range sockets {
		for _, c := range commands {
			args := append(append([]string{}, c...), "--control", sock.path)
			t.Run(sock.name+"/"+strings.Join(c, "_"), func(t *testing.T) {
				var stdout, stderr bytes.Buffer
				code := runMain(args, &stdout, &stderr)
				msg := stderr.String()
				if code != 1 || !strings.HasPrefix(msg, "understudy: "+c[0]+": no gateway answers on "+sock.path) ||
					!strings.Contains(msg, sock.want) || strings.Count(msg, "\n") != 1 || stdout.Len() != 0 {
					t.Fatalf("exit %d stderr %q stdout %q; want exit 1 and one line with %q", code, msg, stdout.String(), sock.want)
				}
			})
		}
	}
}

func TestDrainUsage(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"drain"}, "drain: name one server: primary or backup"},
		{[]string{"drain", "primary", "backup"}, "drain: name one server"},
		{[]string{"drain", "tertiary"}, `drain: server "tertiary": use primary or backup`},
		{[]string{"undrain", "--bogus", "primary"}, "undrain: flag provided but not defined: -bogus"},
	}
	for _, tc := range cases {
		var stdout, stderr bytes.Buffer
		if code := runMain(tc.args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: exit %d %q, want 2 and %q", tc.args, code, stderr.String(), tc.want)
		}
	}
}

// TestDrainCommand runs `understudy drain` against a fake control socket and
// checks what it asks for and prints.
func TestDrainCommand(t *testing.T) {
	path := filepath.Join(t.TempDir(), "u.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	mux := http.NewServeMux()
	mux.HandleFunc("POST /drain", func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.URL.RawQuery)
		q := r.URL.Query()
		res := datapath.DrainResult{Server: q.Get("server"), Drained: q.Get("undo") == "", Flows: 2,
			NewFlows: datapath.NewFlowRoles{Live: "backup", Why: "drained"}}
		if !res.Drained {
			res.Flows, res.NewFlows = 0, datapath.NewFlowRoles{Live: "primary", Shadow: "backup"}
		}
		json.NewEncoder(w).Encode(res)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	defer srv.Close()

	cases := []struct {
		args      []string
		query     string
		wantPrint string
	}{
		{[]string{"drain", "primary"}, "server=primary", "primary drained: new flows go to backup only, unprotected; 2 open flows still use primary\n"},
		{[]string{"drain", "primary", "--undo"}, "server=primary&undo=1", "primary takes new flows again (new flows: primary, shadowed by backup)\n"},
		{[]string{"undrain", "primary"}, "server=primary&undo=1", "primary takes new flows again (new flows: primary, shadowed by backup)\n"},
	}
	for _, tc := range cases {
		got = nil
		var stdout, stderr bytes.Buffer
		code := runMain(append(tc.args, "--control", path), &stdout, &stderr)
		if code != 0 || stdout.String() != tc.wantPrint || len(got) != 1 || got[0] != tc.query {
			t.Errorf("%v: exit %d stdout %q stderr %q query %q; want %q and %q", tc.args, code, stdout.String(), stderr.String(), got, tc.wantPrint, tc.query)
		}
	}
}

// A refused drain reaches the operator as the gateway's one-line reason.
func TestDrainRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "u.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /drain", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "cannot drain primary: backup is out of service (health down), so new flows would still go to primary; wait until backup is back (understudy status)", http.StatusConflict)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	defer srv.Close()
	var stdout, stderr bytes.Buffer
	code := runMain([]string{"drain", "primary", "--control", path}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "understudy: drain: cannot drain primary: backup is out of service") || strings.Count(stderr.String(), "\n") != 1 {
		t.Fatalf("exit %d %q", code, stderr.String())
	}
}

func TestBindControl(t *testing.T) {
	dir := t.TempDir()
	var logBuf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logBuf, nil))

	// Fresh: root-only, removed on Close.
	path := filepath.Join(dir, "fresh.sock")
	c, err := bindControl(path, log)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket %v mode %v", err, fi.Mode())
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket after Close: %v", err)
	}

	// Stale: replaced, and said so.
	stale := staleSocket(t, filepath.Join(dir, "stale.sock"))
	c, err = bindControl(stale, log)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	if !strings.Contains(logBuf.String(), "replaced the control socket an earlier run left") {
		t.Errorf("log: %q", logBuf.String())
	}

	// In use: refused, and the socket left alone.
	if _, err := bindControl(stale, log); err == nil || !strings.Contains(err.Error(), "is in use by a running gateway; stop it first or pick another --control") {
		t.Fatalf("socket in use: %v", err)
	}
	if _, err := os.Stat(stale); err != nil {
		t.Fatalf("the running gateway's socket was removed: %v", err)
	}
	c.Close()

	// Not a socket: refused, and the file left alone.
	for _, p := range []string{filepath.Join(dir, "hosts.bak"), filepath.Join(dir, "empty-dir")} {
		if strings.HasSuffix(p, "dir") {
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
		} else if err := os.WriteFile(p, []byte("precious\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := bindControl(p, log); err == nil || !strings.Contains(err.Error(), "exists and is not a socket") {
			t.Errorf("bindControl on %s: %v, want it refused", p, err)
		}
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s was removed: %v", p, err)
		}
	}
}

// TestControlArguments: a word the command does not take is refused before
// anything is asked of the gateway; "failover primary" would otherwise have
// moved every flow away from the primary.
func TestControlArguments(t *testing.T) {
	path := filepath.Join(t.TempDir(), "u.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var asked atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		w.Write([]byte(`{"server":"primary","flows_moved":3}`))
	})}
	go srv.Serve(ln)
	defer srv.Close()
	for _, args := range [][]string{
		{"failover", "--control", path, "primary"},
		{"failover", "--control", path, "primary", "--to", "primary"},
		{"status", "--control", path, "--json", "bogus"},
	} {
		var stdout, stderr bytes.Buffer
		if code := runMain(args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "unexpected argument") {
			t.Errorf("%v: exit %d, %q; want 2 and the argument named", args, code, stderr.String())
		}
	}
	if n := asked.Load(); n != 0 {
		t.Fatalf("%d requests reached the gateway", n)
	}
}

// TestControlIdleConnection: a client that keeps its connection open
// after its request is cut once idle, not kept for ever.
func TestControlIdleConnection(t *testing.T) {
	defer func(d time.Duration) { controlIdleTimeout = d }(controlIdleTimeout)
	controlIdleTimeout = 200 * time.Millisecond
	path := filepath.Join(t.TempDir(), "u.sock")
	c, err := bindControl(path, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.serve(nil) // only an unknown path is asked for: the gateway is not used
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("GET /nothing HTTP/1.1\r\nHost: u\r\n\r\n"))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection: %v, want it closed by the gateway", err)
	}
}

func TestPrintStatus(t *testing.T) {
	base := func() datapath.Status {
		return datapath.Status{UptimeSeconds: 12, ClientIface: "c0", ServerIface: "s0",
			Services: []datapath.ServiceStatus{{VIP: "192.0.2.100", Port: 80}},
			Servers: []datapath.ServerStatus{{Name: "primary", Addr: "10.0.0.10", Role: "active", Health: "up", Flows: 3},
				{Name: "backup", Addr: "10.0.0.11", Role: "standby", Health: "up", Flows: 2}},
			NewFlows: datapath.NewFlowRoles{Live: "primary", Shadow: "backup"},
			Drops:    map[string]uint64{"no_flow": 2, "flow_cap": 0}}
	}
	cases := []struct {
		name   string
		modify func(*datapath.Status)
		want   []string
		absent []string
	}{
		{"both serving", func(*datapath.Status) {}, []string{
			"primary  10.0.0.10       active   up      3 flows\n", "new flows: primary, shadowed by backup\n",
			"drops: no_flow=2\n", "last failover: none\n"}, []string{"drained", "pcap", "suppressed"}},
		{"primary drained", func(s *datapath.Status) {
			s.Servers[0].Drained = true
			s.NewFlows = datapath.NewFlowRoles{Live: "backup", Why: "drained"}
		}, []string{"3 flows  drained (3 flows still use it)\n", "new flows: backup only, unprotected (drained)\n"}, nil},
		{"traffic", func(s *datapath.Status) {
			s.Traffic = []datapath.TrafficCount{{Direction: "in", Leg: "client", Packets: 3, Bytes: 200},
				{Direction: "in", Leg: "primary", Packets: 5, Bytes: 3 << 20}, {Direction: "out", Leg: "client", Packets: 5, Bytes: 1536}}
		}, []string{"traffic in: client 3 (200 B), primary 5 (3.0 MiB); out: client 5 (1.5 KiB)\n"}, nil},
		{"no server active", func(s *datapath.Status) { s.NewFlows = datapath.NewFlowRoles{} },
			[]string{"new flows: no server is active\n"}, nil},
		{"pcap and suppressed lines", func(s *datapath.Status) {
			s.Pcap = &pcaptap.Stats{File: "/var/log/understudy/u.pcap", Frames: 10, Dropped: 1, Rotations: 2}
			s.LogSuppressed = 7
		}, []string{"pcap /var/log/understudy/u.pcap: 10 frames written, 1 dropped, 2 rotations, 0 errors\n",
			"log lines suppressed by the rate limit: 7\n"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := base()
			tc.modify(&st)
			var out bytes.Buffer
			printStatus(&out, &st)
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("no %q in\n%s", w, out.String())
				}
			}
			for _, a := range tc.absent {
				if strings.Contains(out.String(), a) {
					t.Errorf("%q in\n%s", a, out.String())
				}
			}
		})
	}
}

// staleSocket leaves at path the socket file a crashed gateway leaves: bound
// once, nobody listening.
func staleSocket(t *testing.T, path string) string {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	return path
}

package main

import (
	"bytes"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

const fakeFlows = `[
 {"client":"198.51.100.7:40001","vip":"192.0.2.100:80","state":"established","protection":"protected","bytes_from_client":120,"bytes_to_client":4096,"live":"primary"},
 {"client":"198.51.100.5:40002","vip":"192.0.2.100:80","state":"closing","protection":"unprotected","why":"backup_rst","bytes_from_client":80,"bytes_to_client":0,"live":"primary"},
 {"client":"198.51.100.9:5000","vip":"192.0.2.100:443","state":"established","protection":"diverged","why":"diverged","bytes_from_client":7,"bytes_to_client":1,"live":"backup"}
]`

func TestPrintFlows(t *testing.T) {
	var out bytes.Buffer
	if err := printFlows(&out, []byte(fakeFlows)); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("want a header and 3 lines:\n%s", out.String())
	}
	want := [][]string{
		{"CLIENT", "VIP", "STATE", "PROTECTION", "FROM", "CLIENT", "TO", "CLIENT", "LIVE"},
		{"198.51.100.5:40002", "192.0.2.100:80", "closing", "unprotected:backup_rst", "80", "0", "primary"},
		{"198.51.100.7:40001", "192.0.2.100:80", "established", "protected", "120", "4096", "primary"},
		{"198.51.100.9:5000", "192.0.2.100:443", "established", "diverged", "7", "1", "backup"},
	}
	for i, l := range lines {
		if got := strings.Fields(l); strings.Join(got, " ") != strings.Join(want[i], " ") {
			t.Errorf("line %d: %q, want fields %q", i, l, want[i])
		}
	}

	out.Reset()
	if err := printFlows(&out, []byte("[]")); err != nil || !strings.Contains(out.String(), "no flows") {
		t.Errorf("empty table: %v %q", err, out.String())
	}
	if err := printFlows(&out, []byte("{")); err == nil || !strings.Contains(err.Error(), "decode reply") {
		t.Errorf("bad body: %v", err)
	}
}

// TestFlowsCommand runs `understudy flows` against a fake control socket.
func TestFlowsCommand(t *testing.T) {
	path := filepath.Join(t.TempDir(), "u.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /flows", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(fakeFlows)) })
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	defer srv.Close()

	var stdout, stderr bytes.Buffer
	if code := runMain([]string{"flows", "--control", path}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "unprotected:backup_rst") || strings.Count(stdout.String(), "\n") != 4 {
		t.Errorf("table:\n%s", stdout.String())
	}
	stdout.Reset()
	if code := runMain([]string{"flows", "--json", "--control", path}, &stdout, &stderr); code != 0 || stdout.String() != fakeFlows {
		t.Errorf("--json: exit %d %q", code, stdout.String())
	}
	stderr.Reset()
	code := runMain([]string{"flows", "--control", filepath.Join(t.TempDir(), "none.sock")}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "flows: no gateway answers on") || strings.Count(stderr.String(), "\n") != 1 {
		t.Errorf("no daemon: exit %d %q", code, stderr.String())
	}
}

package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// unitFile reads a systemd unit into section -> key -> values.
func unitFile(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: bad line %q", path, line)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	return out
}

// The unit in deploy/ runs the gateway from the configuration file the
// README installs, restarts it on failure and lets it use what it needs.
func TestSystemdUnit(t *testing.T) {
	const path = "../../deploy/understudy.service"
	u := unitFile(t, path)
	svc := u["Service"]
	cases := []struct{ key, want string }{
		{"ExecStart", "/usr/local/bin/understudy run --config /etc/understudy/understudy.yaml"},
		{"ExecStartPre", "/usr/local/bin/understudy check --config /etc/understudy/understudy.yaml"},
		{"Restart", "on-failure"},
		{"KillSignal", "SIGTERM"},
		{"CapabilityBoundingSet", "CAP_NET_RAW CAP_NET_ADMIN"},
		{"AmbientCapabilities", "CAP_NET_RAW CAP_NET_ADMIN"},
		{"NoNewPrivileges", "yes"},
		{"ProtectSystem", "strict"},
		{"ReadWritePaths", "/run"}, // the default control socket, /run/understudy.sock
		{"PrivateNetwork", "no"},
	}
	for _, c := range cases {
		if got := strings.Join(svc[c.key], "|"); got != c.want {
			t.Errorf("[Service] %s=%q, want %q", c.key, got, c.want)
		}
	}
	if fams := strings.Join(svc["RestrictAddressFamilies"], " "); !strings.Contains(fams, "AF_PACKET") || !strings.Contains(fams, "AF_NETLINK") {
		t.Errorf("RestrictAddressFamilies=%s: the gateway needs AF_PACKET and AF_NETLINK", fams)
	}
	if got := strings.Join(u["Install"]["WantedBy"], ""); got != "multi-user.target" {
		t.Errorf("WantedBy=%s", got)
	}
	// The default control socket is where the unit lets the gateway write.
	if !strings.HasPrefix(defaultControl, "/run/") {
		t.Errorf("default control socket %s is outside /run", defaultControl)
	}

	// systemd itself accepts it, where installed (ExecStart pointed at a
	// binary that exists, as verify checks).
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed: the unit's syntax was not verified by systemd")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(t.TempDir(), "understudy.service")
	if err := os.WriteFile(tmp, []byte(strings.ReplaceAll(string(data), "/usr/local/bin/understudy", self)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(analyze, "verify", tmp).CombinedOutput(); err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// The example configuration shows every key the file accepts, so that it
// stays the reference when a setting is added.
func TestExampleConfigHasEveryKey(t *testing.T) {
	data, err := os.ReadFile("../../deploy/understudy.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for section, keys := range allowedKeys {
		for _, k := range strings.Split(keys, ", ") {
			if !strings.Contains(string(data), k+":") {
				t.Errorf("deploy/understudy.example.yaml does not show %s (a key of %s)", k, section)
			}
		}
	}
}

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const baseYAML = `client_iface: c0
server_iface: s0
services:
  - vip: 192.0.2.100
    port: 80
primary: 10.0.0.10
backup: 10.0.0.11
`

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "u.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// checkConfig runs the parsing and validation `check` does.
func checkConfig(t *testing.T, body string, args ...string) (*runFlags, error) {
	t.Helper()
	p := writeConfig(t, body)
	f, err := parseGatewayFlags("check", append([]string{"--config", p}, args...), &bytes.Buffer{})
	if err != nil {
		return nil, err
	}
	_, err = f.gatewayConfig()
	return f, err
}

func TestConfigFile(t *testing.T) {
	f, err := parseGatewayFlags("check", []string{"--config", "testdata/good.yaml"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := f.gatewayConfig()
	if err != nil {
		t.Fatal(err)
	}
	if c.ClientIface != "c0" || c.ServerIface != "s0" || c.Primary.String() != "10.0.0.10" || c.Backup.String() != "10.0.0.11" {
		t.Errorf("interfaces/servers: %+v", c)
	}
	if got := serviceList(c.Services); got != "192.0.2.100:80,192.0.2.100:443,192.0.2.101:8080" {
		t.Errorf("services %s", got)
	}
	if c.Probe.Interval != 20*time.Millisecond || c.Probe.Timeout != 50*time.Millisecond || c.Probe.Misses != 4 || c.Probe.Rise != 2 || c.ProbeHTTP != "/health" || c.ProbeBusyFor != 3*time.Second {
		t.Errorf("probe %+v %q", c.Probe, c.ProbeHTTP)
	}
	if f.control != "/tmp/u.sock" || f.logFormat != "json" || f.metrics != ":9410" {
		t.Errorf("control %q log %q metrics %q", f.control, f.logFormat, f.metrics)
	}
}

func TestConfigFlagsOverrideFile(t *testing.T) {
	f, err := parseGatewayFlags("check", []string{"--config", "testdata/good.yaml", "--probe-misses", "7",
		"--primary", "10.0.0.20", "--vip", "192.0.2.50", "--port", "81,82", "--log-format", "text"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := f.gatewayConfig()
	if err != nil {
		t.Fatal(err)
	}
	if c.Probe.Misses != 7 || c.Probe.Rise != 2 || c.Primary.String() != "10.0.0.20" || c.Backup.String() != "10.0.0.11" || f.logFormat != "text" {
		t.Errorf("override: %+v log %q", c, f.logFormat)
	}
	if got := serviceList(c.Services); got != "192.0.2.50:81,192.0.2.50:82" {
		t.Errorf("flags' services replace the file's: %s", got)
	}
	// The file's keep_offloads, and the flag over it.
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{nil, true},
		{[]string{"--keep-offloads=false"}, false},
	} {
		f, err := parseGatewayFlags("check", append([]string{"--config", writeConfig(t, baseYAML+"keep_offloads: true\n")}, tc.args...), &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if c, err := f.gatewayConfig(); err != nil || c.KeepOffloads != tc.want {
			t.Errorf("keep_offloads: true with %q: KeepOffloads %v, err %v; want %v", tc.args, c.KeepOffloads, err, tc.want)
		}
	}
	// A flag's value that is bad is reported by its flag name.
	_, err = checkConfig(t, baseYAML, "--probe-rise", "0")
	if err == nil || !strings.Contains(err.Error(), "--probe-rise 0: use a count") {
		t.Errorf("flag error: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		want string
	}{
		{"unknown key", baseYAML + "bogus: 1\n", `line 8: unknown key "bogus" (allowed here: client_iface,`},
		{"unknown probe key", baseYAML + "probe:\n  retries: 3\n", `unknown key "retries" (allowed here: interval, timeout, misses, rise, http, busy_for)`},
		{"unknown service key", strings.Replace(baseYAML, "    port: 80", "    port: 80\n    proto: tcp", 1), `unknown key "proto" (allowed here: vip, port)`},
		{"services not a list", strings.Replace(baseYAML, "services:\n  - vip: 192.0.2.100\n    port: 80\n", "services: 80\n", 1), `found the value "80" where a list (each a mapping with vip and port) belongs`},
		{"list for a value", baseYAML + "control: [a, b]\n", "found a list where a single value belongs"},
		{"bad yaml", baseYAML + "probe: {\n", "did not find expected"},
		{"empty", "", "services is required: list at least one {vip, port}"},
		{"missing primary", strings.Replace(baseYAML, "primary: 10.0.0.10\n", "", 1), "primary is required (in the file, or as --primary)"},
		{"missing client iface", strings.Replace(baseYAML, "client_iface: c0\n", "", 1), "client_iface is required"},
		{"same iface", strings.Replace(baseYAML, "server_iface: s0", "server_iface: c0", 1), `client_iface and server_iface are both "c0"`},
		{"primary garbage", strings.Replace(baseYAML, "primary: 10.0.0.10", "primary: server1", 1), `primary "server1" is not an IPv4 address`},
		{"backup loopback", strings.Replace(baseYAML, "backup: 10.0.0.11", "backup: 127.0.0.1", 1), "backup 127.0.0.1 cannot be used: give a unicast address"},
		{"same servers", strings.Replace(baseYAML, "backup: 10.0.0.11", "backup: 10.0.0.10", 1), "primary and backup are both 10.0.0.10"},
		{"vip ipv6", strings.Replace(baseYAML, "vip: 192.0.2.100", "vip: 2001:db8::1", 1), `services[0].vip "2001:db8::1" is not an IPv4 address`},
		{"vip is backup", strings.Replace(baseYAML, "vip: 192.0.2.100", "vip: 10.0.0.11", 1), "services[0].vip 10.0.0.11 equals backup"},
		{"vip missing", strings.Replace(baseYAML, "  - vip: 192.0.2.100\n    port: 80", "  - port: 80", 1), "services[0].vip is required"},
		{"port missing", strings.Replace(baseYAML, "    port: 80\n", "", 1), "services[0].port is required"},
		{"port zero", strings.Replace(baseYAML, "port: 80", "port: 0", 1), `services[0].port "0": use a number from 1 to 65535`},
		{"port name", strings.Replace(baseYAML, "port: 80", "port: http", 1), `services[0].port "http": use a number from 1 to 65535`},
		{"service twice", strings.Replace(baseYAML, "    port: 80\n", "    port: 80\n  - {vip: 192.0.2.100, port: 80}\n", 1), "services[1]: 192.0.2.100:80 is listed twice"},
		{"port two vips", strings.Replace(baseYAML, "    port: 80\n", "    port: 80\n  - {vip: 192.0.2.101, port: 80}\n", 1),
			"services[1]: port 80 is already served by VIP 192.0.2.100: one VIP per port"},
		{"interval unit", baseYAML + "probe:\n  interval: 10\n", `probe.interval "10": use a duration with a unit (example: 10ms)`},
		{"interval range", baseYAML + "probe:\n  interval: 2m\n", "probe.interval 2m0s: use a duration from 1ms to 1m"},
		{"timeout range", baseYAML + "probe:\n  timeout: 1us\n", "probe.timeout 1µs: use a duration from 1ms to 1m, or leave it out"},
		{"misses word", baseYAML + "probe:\n  misses: three\n", `probe.misses "three": use a whole number`},
		{"misses range", baseYAML + "probe:\n  misses: 1001\n", "probe.misses 1001: use a count from 1 to 1000"},
		{"rise range", baseYAML + "probe:\n  rise: -2\n", "probe.rise -2: use a count from 1 to 1000"},
		{"busy_for range", baseYAML + "probe:\n  busy_for: 2m\n", "probe.busy_for 2m0s: use a duration from 1ms to 1m"},
		{"probe http", baseYAML + "probe:\n  http: health\n", `probe.http "health": give a path starting with /`},
		{"log format", baseYAML + "log_format: xml\n", `log_format "xml": use text or json`},
		{"metrics", baseYAML + "metrics: 9410\n", `metrics "9410": give host:port or :port`},
		{"metrics port", baseYAML + "metrics: 127.0.0.1:99999\n", `metrics "127.0.0.1:99999": port "99999" is not a number from 0 to 65535`},
		{"control too long", baseYAML + "control: /tmp/" + strings.Repeat("x", 120) + ".sock\n", "bytes, more than a unix socket's path holds (107); pick a shorter one"},
		{"control dir", baseYAML + "control: /nonexistent/dir/u.sock\n", `control "/nonexistent/dir/u.sock": directory /nonexistent/dir does not exist`},
		{"two documents", baseYAML + "---\nprobe:\n  interval: 50ms\n", `more than one YAML document (a line "---" starts another): put every setting in one`},
		{"pcap dir", baseYAML + "pcap: /nonexistent/dir/x.pcap\n", "pcap /nonexistent/dir/x.pcap: directory /nonexistent/dir does not exist; create it or pick another file"},
		{"pcap is a dir", baseYAML + "pcap: /tmp\n", "pcap /tmp is a directory: give a file name"},
		{"pcap size small", baseYAML + "pcap_max_bytes: 1000\n", `pcap_max_bytes "1000": use a size from 64K to 1024G (example: 100M)`},
		{"pcap size word", baseYAML + "pcap_max_bytes: lots\n", `pcap_max_bytes "lots": use a size from 64K to 1024G`},
		{"pcap keep", baseYAML + "pcap_keep: -1\n", "pcap_keep -1: use a count from 0 to 1000"},
		{"pcap keep word", baseYAML + "pcap_keep: all\n", `pcap_keep "all": use a whole number`},
		{"keep offloads word", baseYAML + "keep_offloads: sometimes\n", `keep_offloads "sometimes": use true or false`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := checkConfig(t, tc.yaml)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "check: config ") {
				t.Errorf("error does not name the file: %q", err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
		})
	}
}

func TestConfigTestdata(t *testing.T) {
	cases := []struct{ file, want string }{
		{"same-port.yaml", "services[1]: port 80 is already served by VIP 192.0.2.100: one VIP per port"},
		{"unknown-key.yaml", `unknown key "retries"`},
		{"empty.yaml", "services is required"},
		{"missing.yaml", "no such file or directory"},
	}
	for _, tc := range cases {
		var stdout, stderr bytes.Buffer
		code := runMain([]string{"check", "--config", filepath.Join("testdata", tc.file)}, &stdout, &stderr)
		if code == 0 || !strings.Contains(stderr.String(), tc.want) || stdout.Len() != 0 {
			t.Errorf("%s: exit %d stderr %q stdout %q; want failure with %q", tc.file, code, stderr.String(), stdout.String(), tc.want)
		}
	}
}

// The example shipped in deploy/ must stay valid.
func TestExampleConfig(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := runMain([]string{"check", "--config", "../../deploy/understudy.example.yaml"}, &stdout, &stderr)
	if code != 0 || !strings.HasPrefix(stdout.String(), "OK: ") || strings.Count(stdout.String(), "\n") != 1 {
		t.Fatalf("exit %d stdout %q stderr %q", code, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "services 203.0.113.10:80,203.0.113.10:443,203.0.113.11:8080") {
		t.Errorf("summary %q", stdout.String())
	}
}

func TestParseSize(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"65536", 65536, true}, {"64K", 64 << 10, true}, {"100M", 100 << 20, true}, {"2g", 2 << 30, true},
		{" 7M ", 7 << 20, true}, {"", 0, false}, {"M", 0, false}, {"-1M", 0, false}, {"1.5G", 0, false},
		{"10MB", 0, false}, {"99999999999G", 0, false},
	}
	for _, tc := range cases {
		if got, ok := parseSize(tc.in); got != tc.want || ok != tc.ok {
			t.Errorf("parseSize(%q) = %d %v, want %d %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestPcapSettings(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "gw.pcap")
	cases := []struct {
		name string
		yaml string
		args []string
		want string // in check's summary
		path string
		max  int64
		keep int // pcaptap.Config.Keep: -1 keeps none
	}{
		{"off by default", baseYAML, nil, "pcap off", "", 100 << 20, 4},
		{"file", baseYAML + "pcap: " + file + "\npcap_max_bytes: 10M\npcap_keep: 2\n", nil,
			"pcap " + file + " (rotated at 10485760 bytes, 2 kept)", file, 10 << 20, 2},
		{"flags override", baseYAML + "pcap: " + file + "\npcap_keep: 2\n", []string{"--pcap-keep", "0", "--pcap-max-bytes", "64K"},
			"pcap " + file + " (rotated at 65536 bytes, 0 kept)", file, 64 << 10, -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := checkConfig(t, tc.yaml, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			c, _ := f.gatewayConfig()
			if sum := checkSummary(f, &c); !strings.Contains(sum, tc.want) {
				t.Errorf("summary %q, want %q in it", sum, tc.want)
			}
			pc := f.pcapConfig()
			if pc.Path != tc.path || pc.MaxBytes != tc.max || pc.Keep != tc.keep {
				t.Errorf("pcap config %+v", pc)
			}
		})
	}
}

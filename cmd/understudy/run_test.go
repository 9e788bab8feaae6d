package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRunFlagErrors(t *testing.T) {
	good := []string{"--client-iface", "c0", "--server-iface", "s0", "--vip", "192.0.2.100",
		"--port", "80", "--primary", "10.0.0.10", "--backup", "10.0.0.11"}
	with := func(flag, val string) []string {
		out := append([]string(nil), good...)
		for i := 0; i < len(out); i += 2 {
			if out[i] == flag {
				out[i+1] = val
				return out
			}
		}
		return append(out, flag, val)
	}
	without := func(flag string) []string {
		var out []string
		for i := 0; i < len(good); i += 2 {
			if good[i] != flag {
				out = append(out, good[i], good[i+1])
			}
		}
		return out
	}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"missing vip", without("--vip"), "--vip is required"},
		{"missing backup", without("--backup"), "--backup is required"},
		{"same iface", with("--server-iface", "c0"), "different interfaces"},
		{"vip not ipv4", with("--vip", "2001:db8::1"), `--vip "2001:db8::1" is not an IPv4 address`},
		{"vip garbage", with("--vip", "vip"), "is not an IPv4 address"},
		{"primary multicast", with("--primary", "224.0.0.1"), "give a unicast address"},
		{"vip is primary", with("--vip", "10.0.0.10"), "--vip 10.0.0.10 equals --primary"},
		{"vip is backup", with("--vip", "10.0.0.11"), "equals --backup"},
		{"same servers", with("--backup", "10.0.0.10"), "--primary and --backup are both 10.0.0.10"},
		{"port zero", with("--port", "0"), "from 1 to 65535"},
		{"port big", with("--port", "70000"), "from 1 to 65535"},
		{"port list bad", with("--port", "80,x"), `--port "x"`},
		{"port twice", with("--port", "80,80"), "listed twice"},
		{"log format", with("--log-format", "xml"), "use text or json"},
		{"probe interval", with("--probe-interval", "0s"), "--probe-interval 0s"},
		{"probe timeout", with("--probe-timeout", "2m"), "--probe-timeout 2m0s"},
		{"probe misses", with("--probe-misses", "0"), "--probe-misses 0"},
		{"probe rise", with("--probe-rise", "-1"), "--probe-rise -1"},
		{"probe busy-for", with("--probe-busy-for", "0s"), "--probe-busy-for 0s: use a duration from 1ms to 1m"},
		{"probe http", with("--probe-http", "index.html"), "starting with /"},
		{"max half-open", with("--max-half-open", "0"), "--max-half-open 0: use a count"},
		{"unknown flag", with("--bogus", "1"), "flag provided but not defined"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			f, err := parseRunFlags(tc.args, &stderr)
			if err == nil {
				_, err = f.gatewayConfig()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
		})
	}
	f, err := parseRunFlags(with("--port", "80,8080"), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := f.gatewayConfig()
	if err != nil || len(c.Services) != 2 || c.Services[1].Port != 8080 {
		t.Fatalf("good flags: %v %+v", err, c.Services)
	}
}

func TestMainExitCodes(t *testing.T) {
	cases := []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "usage:"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"run", "--vip", "1.2.3.4"}, 2, "--client-iface is required"},
		{[]string{"status", "--control", "/nonexistent/understudy.sock"}, 1, "is `understudy run` running"},
	}
	for _, tc := range cases {
		var stdout, stderr bytes.Buffer
		code := runMain(tc.args, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: exit %d stderr %q; want %d and %q", tc.args, code, stderr.String(), tc.code, tc.want)
		}
		if n := strings.Count(strings.TrimSpace(stderr.String()), "\n"); tc.code == 1 && n != 0 {
			t.Errorf("%v: error spans %d lines", tc.args, n+1)
		}
	}
}

package testbed

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// System is one way of serving the VIP from the gateway host, for the
// side-by-side benchmark (DESIGN.md §5).
type System string

// The systems make bench compares.
const (
	// Kernel: the host kernel forwards, with an nftables DNAT of the VIP to
	// the primary. The physical reference; no backup.
	Kernel System = "kernel"
	// HAProxy in TCP mode on the gateway host, the backup as its backup
	// server: what operators deploy today.
	HAProxy System = "haproxy"
	// Understudy with primary and backup.
	Understudy System = "understudy"
)

// Systems lists them in the order a round runs them.
var Systems = []System{Kernel, HAProxy, Understudy}

// Serving is a system serving the VIP until Stop.
type Serving struct {
	System System
	proc   *Proc // nil for the kernel
	stop   func() error
}

// Pid is the gateway process's pid, 0 for the kernel.
func (s *Serving) Pid() int {
	if s.proc == nil {
		return 0
	}
	return s.proc.Cmd.Process.Pid
}

// Stop ends the system and undoes what it installed. Idempotent.
func (s *Serving) Stop() error {
	if s.stop == nil {
		return nil
	}
	err := s.stop()
	s.stop = nil
	return err
}

// HAProxyMaxConn is what one HAProxy process can hold here: two files per
// connection, and the hard file limit (20000) cannot be raised.
const HAProxyMaxConn = 9500

// haproxySources are the gateway's server-side addresses HAProxy connects
// from: one address has only 64k ports towards one server, and the bench
// holds 100k flows.
var haproxySources = []string{GatewayServerIP, "10.77.2.2"}

// Serve starts system sys on the VIP and returns once the client gets an
// answer through it. gatewayArgs go to understudy only.
func (b *Bed) Serve(sys System, gatewayArgs ...string) (*Serving, error) {
	s := &Serving{System: sys}
	switch sys {
	case Kernel:
		if err := b.nft(fmt.Sprintf(`table ip us_ref {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr %s tcp dport %d dnat to %s:%d
	}
}`, VIP, Port, PrimaryIP, Port)); err != nil {
			return nil, err
		}
		s.stop = func() error { return b.Run(b.Gateway(), "nft", "delete", "table", "ip", "us_ref") }
	case HAProxy:
		p, stop, err := b.startHAProxy()
		if err != nil {
			return nil, err
		}
		s.proc, s.stop = p, stop
	case Understudy:
		p := b.StartGateway(gatewayArgs...)
		s.proc, s.stop = p, p.Stop
	default:
		return nil, fmt.Errorf("unknown system %q", sys)
	}
	if err := b.waitVIP(10 * time.Second); err != nil {
		s.Stop()
		return nil, fmt.Errorf("%s: %w", sys, err)
	}
	return s, nil
}

func (b *Bed) nft(rules string) error {
	cmd := b.Cmd(b.Gateway(), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft -f: %v: %s", err, out)
	}
	return nil
}

// waitVIP polls the VIP from the client until it serves /index.html.
func (b *Bed) waitVIP(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		_, _, err := b.Curl("-fsS", "-o", "/dev/null", "--max-time", "1", URL("/index.html"))
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the VIP does not answer after %v: %w", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// haproxyConfig checks the servers as understudy's probes do (10ms, 3
// misses, 3 good) and balances each server's connections over the source
// addresses.
func haproxyConfig(maxconn int) string {
	var c strings.Builder
	fmt.Fprintf(&c, `global
	maxconn %d
defaults
	mode tcp
	timeout connect 1s
	timeout client 10m
	timeout server 10m
listen vip
	bind %s:%d
	balance roundrobin
`, maxconn, VIP, Port)
	for i, src := range haproxySources {
		fmt.Fprintf(&c, "\tserver pri%d %s:%d source %s check inter 10ms fall 3 rise 3\n", i, PrimaryIP, Port, src)
	}
	for i, src := range haproxySources {
		fmt.Fprintf(&c, "\tserver bak%d %s:%d source %s check inter 10ms fall 3 rise 3 backup\n", i, BackupIP, Port, src)
	}
	return c.String()
}

// startHAProxy puts the VIP on the gateway's loopback (HAProxy terminates
// the client's connection), adds the extra source addresses and runs
// haproxy in the foreground in the gateway namespace.
func (b *Bed) startHAProxy() (*Proc, func() error, error) {
	if _, err := exec.LookPath("haproxy"); err != nil {
		return nil, nil, errors.New("haproxy is not installed: apt-get install -y haproxy")
	}
	cfg := filepath.Join(b.Dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(haproxyConfig(HAProxyMaxConn)), 0o644); err != nil {
		return nil, nil, err
	}
	var undo []func() error
	cleanup := func() error {
		var errs []error
		for i := len(undo) - 1; i >= 0; i-- {
			errs = append(errs, undo[i]())
		}
		return errors.Join(errs...)
	}
	addr := func(a, dev string) error {
		if err := b.Run(b.Gateway(), "ip", "addr", "add", a, "dev", dev); err != nil {
			return err
		}
		undo = append(undo, func() error { return b.Run(b.Gateway(), "ip", "addr", "del", a, "dev", dev) })
		return nil
	}
	if err := addr(VIP+"/32", "lo"); err != nil {
		return nil, nil, err
	}
	for _, src := range haproxySources[1:] {
		if err := addr(src+"/24", ServerIface); err != nil {
			cleanup()
			return nil, nil, err
		}
	}
	// Each source address has the whole port range towards a server.
	if err := b.Run(b.Gateway(), "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535"); err != nil {
		cleanup()
		return nil, nil, err
	}
	p, err := startProc("haproxy", b.Cmd(b.Gateway(), "haproxy", "-db", "-f", cfg), filepath.Join(b.Dir, "haproxy.log"))
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	undo = append(undo, p.Stop)
	return p, cleanup, nil
}

// CPUTime is the user plus system CPU time process pid has used, from
// /proc/PID/stat.
func CPUTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces: fields count from after its ')'.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')' in %q", pid, s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	// utime and stime are fields 14 and 15 of the whole line, in clock
	// ticks (USER_HZ, 100 on Linux).
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// MachineCPU is the busy CPU time of the whole machine (every CPU, from
// /proc/stat: all but idle and iowait), which also counts the kernel's
// forwarding in softirq context.
func MachineCPU() (time.Duration, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: first line %q", line)
	}
	var busy uint64
	for i, v := range f[1:] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		// user nice system idle iowait irq softirq steal guest guest_nice;
		// guest time is already in user.
		if i != 3 && i != 4 && i < 8 {
			busy += n
		}
	}
	return time.Duration(busy) * 10 * time.Millisecond, nil
}

// RSS is the resident set size of process pid, from /proc/PID/status.
func RSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status: %w", pid, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

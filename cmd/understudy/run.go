package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"understudy/datapath"
	"understudy/failover"
	"understudy/tcpstate"
)

// runFlags are the flags of `understudy run`.
type runFlags struct {
	clientIface, serverIface string
	vip, primary, backup     string
	ports                    string
	control                  string
	logFormat                string
	probeInterval            time.Duration
	probeMisses, probeRise   int
	probeTimeout             time.Duration
	probeHTTP                string
}

func parseRunFlags(args []string, stderr io.Writer) (*runFlags, error) {
	var f runFlags
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.clientIface, "client-iface", "", "interface clients reach the VIP through")
	fs.StringVar(&f.serverIface, "server-iface", "", "interface on the servers' LAN")
	fs.StringVar(&f.vip, "vip", "", "virtual IPv4 address clients connect to")
	fs.StringVar(&f.ports, "port", "", "service TCP port(s), comma-separated")
	fs.StringVar(&f.primary, "primary", "", "primary server's IPv4 address")
	fs.StringVar(&f.backup, "backup", "", "backup server's IPv4 address")
	fs.StringVar(&f.control, "control", defaultControl, "control socket path")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fs.DurationVar(&f.probeInterval, "probe-interval", failover.DefaultInterval, "interval between health probes of each server (also each probe's timeout)")
	fs.DurationVar(&f.probeTimeout, "probe-timeout", 0, "timeout of one probe (default: the probe interval); longer tolerates a loaded server, detects a silent host slower")
	fs.IntVar(&f.probeMisses, "probe-misses", failover.DefaultMisses, "consecutive failed probes that declare a server down")
	fs.IntVar(&f.probeRise, "probe-rise", failover.DefaultRise, "consecutive good probes that bring a failed server back as standby")
	fs.StringVar(&f.probeHTTP, "probe-http", "", "probe with an HTTP GET of this path instead of a TCP connect (detects hung servers)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usagef("run: %v", err)
	}
	if fs.NArg() > 0 {
		return nil, usagef("run: unexpected argument %q", fs.Arg(0))
	}
	return &f, nil
}

// gatewayConfig validates the flags into a datapath configuration. Every
// message says what was wrong and what to do.
func (f *runFlags) gatewayConfig() (datapath.Config, error) {
	var c datapath.Config
	for _, req := range []struct{ name, val string }{
		{"--client-iface", f.clientIface}, {"--server-iface", f.serverIface},
		{"--vip", f.vip}, {"--port", f.ports}, {"--primary", f.primary}, {"--backup", f.backup},
	} {
		if req.val == "" {
			return c, usagef("run: %s is required", req.name)
		}
	}
	if f.clientIface == f.serverIface {
		return c, usagef("run: --client-iface and --server-iface are both %q; the gateway needs the clients and the servers on different interfaces", f.clientIface)
	}
	vip, err := parseIPv4("--vip", f.vip)
	if err != nil {
		return c, err
	}
	if c.Primary, err = parseIPv4("--primary", f.primary); err != nil {
		return c, err
	}
	if c.Backup, err = parseIPv4("--backup", f.backup); err != nil {
		return c, err
	}
	if c.Primary == c.Backup {
		return c, usagef("run: --primary and --backup are both %s; give the backup its own server", c.Primary)
	}
	for _, s := range []struct {
		name string
		a    netip.Addr
	}{{"--primary", c.Primary}, {"--backup", c.Backup}} {
		if s.a == vip {
			return c, usagef("run: --vip %s equals %s; the VIP must be an address no server owns (servers are reached by their real addresses)", vip, s.name)
		}
	}
	ports, err := parsePorts(f.ports)
	if err != nil {
		return c, err
	}
	for _, p := range ports {
		c.Services = append(c.Services, tcpstate.Service{VIP: vip.As4(), Port: p})
	}
	if f.probeInterval < time.Millisecond || f.probeInterval > time.Minute {
		return c, usagef("run: --probe-interval %v: use a duration from 1ms to 1m (example: 10ms)", f.probeInterval)
	}
	if f.probeTimeout != 0 && (f.probeTimeout < time.Millisecond || f.probeTimeout > time.Minute) {
		return c, usagef("run: --probe-timeout %v: use a duration from 1ms to 1m, or leave it out to use the interval", f.probeTimeout)
	}
	if f.probeMisses < 1 || f.probeMisses > 1000 {
		return c, usagef("run: --probe-misses %d: use a count from 1 to 1000", f.probeMisses)
	}
	if f.probeRise < 1 || f.probeRise > 1000 {
		return c, usagef("run: --probe-rise %d: use a count from 1 to 1000", f.probeRise)
	}
	if f.probeHTTP != "" && !strings.HasPrefix(f.probeHTTP, "/") {
		return c, usagef("run: --probe-http %q: give a path starting with / (example: /index.html)", f.probeHTTP)
	}
	c.Probe = failover.Config{Interval: f.probeInterval, Misses: f.probeMisses, Rise: f.probeRise, Timeout: f.probeTimeout}
	c.ProbeHTTP = f.probeHTTP
	if f.logFormat != "text" && f.logFormat != "json" {
		return c, usagef("run: --log-format %q: use text or json", f.logFormat)
	}
	c.ClientIface, c.ServerIface = f.clientIface, f.serverIface
	c.VerifyChecksums = true
	return c, nil
}

func parseIPv4(name, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, usagef("run: %s %q is not an IPv4 address (example: 192.0.2.10)", name, s)
	}
	if a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return netip.Addr{}, usagef("run: %s %s cannot be used: give a unicast address", name, s)
	}
	return a, nil
}

func parsePorts(s string) ([]uint16, error) {
	var ports []uint16
	seen := map[uint16]bool{}
	for _, part := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || n < 1 || n > 65535 {
			return nil, usagef("run: --port %q: each port must be a number from 1 to 65535, comma-separated (example: 80,443)", part)
		}
		if seen[uint16(n)] {
			return nil, usagef("run: --port %d is listed twice", n)
		}
		seen[uint16(n)] = true
		ports = append(ports, uint16(n))
	}
	return ports, nil
}

// checkEnvironment refuses to start where the gateway cannot work.
func checkEnvironment(c *datapath.Config) error {
	if os.Geteuid() != 0 {
		return errors.New("run: must run as root (raw sockets, nftables and offload settings need it): run it with sudo or as root")
	}
	for _, s := range []struct{ flag, name string }{{"--client-iface", c.ClientIface}, {"--server-iface", c.ServerIface}} {
		ifi, err := net.InterfaceByName(s.name)
		if err != nil {
			return fmt.Errorf("run: %s %s: no such interface; list them with `ip link`", s.flag, s.name)
		}
		if ifi.Flags&net.FlagUp == 0 {
			return fmt.Errorf("run: %s %s is down; bring it up with `ip link set %s up`", s.flag, s.name, s.name)
		}
	}
	return nil
}

func cmdRun(args []string, stderr io.Writer) error {
	f, err := parseRunFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	cfg, err := f.gatewayConfig()
	if err != nil {
		return err
	}
	if err := checkEnvironment(&cfg); err != nil {
		return err
	}
	var h slog.Handler = slog.NewTextHandler(stderr, nil)
	if f.logFormat == "json" {
		h = slog.NewJSONHandler(stderr, nil)
	}
	log := slog.New(h)
	cfg.Log = log

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	gw, err := datapath.Open(ctx, cfg)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	defer func() {
		if err := gw.Close(); err != nil {
			log.Error("close", "err", err)
		}
	}()
	ctl, err := listenControl(f.control, gw)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	defer ctl.Close()
	log.Info("understudy running", "client_iface", cfg.ClientIface, "server_iface", cfg.ServerIface,
		"vip", f.vip, "ports", f.ports, "primary", cfg.Primary, "backup", cfg.Backup, "control", f.control)
	err = gw.Run(ctx)
	st := gw.Status()
	log.Info("understudy stopping", "flows", st.Flows.Total, "protected", st.Flows.Protected)
	return err
}

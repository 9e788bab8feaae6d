package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"understudy/datapath"
	"understudy/failover"
	"understudy/pcaptap"
	"understudy/tcpstate"
)

// runFlags are the settings of `understudy run` and `understudy check`: the
// flags, with the configuration file's values where no flag was given.
type runFlags struct {
	cmd                      string // run or check, for messages
	config                   string // configuration file, if any
	clientIface, serverIface string
	vip, primary, backup     string
	ports                    string
	control                  string
	logFormat                string
	metrics                  string
	probeInterval            time.Duration
	probeMisses, probeRise   int
	probeTimeout             time.Duration
	probeBusyFor             time.Duration
	probeHTTP                string
	pcap, pcapMax            string
	pcapKeep                 int
	maxHalfOpen              int
	keepOffloads             bool

	services []serviceSpec
	// names maps a flag to the file key its value came from, so that an
	// error names what the operator wrote.
	names map[string]string
}

// serviceSpec is one VIP:port as written, with the names to report it by.
type serviceSpec struct {
	vip, vipName string
	port         uint16
	portName     string
}

func parseRunFlags(args []string, stderr io.Writer) (*runFlags, error) {
	return parseGatewayFlags("run", args, stderr)
}

// parseGatewayFlags reads the flags and, with --config, the file; a flag
// given on the command line overrides the file's value.
func parseGatewayFlags(cmd string, args []string, stderr io.Writer) (*runFlags, error) {
	f := runFlags{cmd: cmd, names: map[string]string{}}
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.config, "config", "", "YAML configuration file; flags given on the command line override its values")
	fs.StringVar(&f.clientIface, "client-iface", "", "interface clients reach the VIP through")
	fs.StringVar(&f.serverIface, "server-iface", "", "interface on the servers' LAN")
	fs.StringVar(&f.vip, "vip", "", "virtual IPv4 address clients connect to")
	fs.StringVar(&f.ports, "port", "", "service TCP port(s), comma-separated")
	fs.StringVar(&f.primary, "primary", "", "primary server's IPv4 address")
	fs.StringVar(&f.backup, "backup", "", "backup server's IPv4 address")
	fs.StringVar(&f.control, "control", defaultControl, "control socket path")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&f.metrics, "metrics", "", "serve Prometheus metrics over HTTP on this address (example: 127.0.0.1:9410)")
	fs.DurationVar(&f.probeInterval, "probe-interval", failover.DefaultInterval, "interval between health probes of each server (also each probe's timeout)")
	fs.DurationVar(&f.probeTimeout, "probe-timeout", 0, "timeout of one probe (default: the probe interval); longer tolerates a loaded server, detects a silent host slower")
	fs.IntVar(&f.probeMisses, "probe-misses", failover.DefaultMisses, "consecutive failed probes that declare a server down")
	fs.IntVar(&f.probeRise, "probe-rise", failover.DefaultRise, "consecutive good probes that bring a failed server back as standby")
	fs.DurationVar(&f.probeBusyFor, "probe-busy-for", failover.DefaultBusyFor, "how long in a row probe timeouts are excused while a server sends clients data but answers no request (a hung server's kernel emptying its sockets looks the same); while it answers, they always are")
	fs.BoolVar(&f.keepOffloads, "keep-offloads", false, "leave the interfaces' GRO/TSO and checksum offloads on and pass super-frames through whole (faster where offloads are on; rings of 64 KiB slots); default: turn them off")
	fs.IntVar(&f.maxHalfOpen, "max-half-open", 1<<16, "flows in their handshake at most; beyond it a new SYN evicts the oldest (SYN floods)")
	fs.StringVar(&f.probeHTTP, "probe-http", "", "probe with an HTTP GET of this path instead of a TCP connect (detects hung servers)")
	fs.StringVar(&f.pcap, "pcap", "", "write every frame received and sent to this pcap file (read it with tcpdump -enr FILE: In/Out marks the direction)")
	fs.StringVar(&f.pcapMax, "pcap-max-bytes", "100M", "rotate the pcap file before it grows past this size (K, M, G suffixes)")
	fs.IntVar(&f.pcapKeep, "pcap-keep", pcaptap.DefaultKeep, "rotated pcap files to keep (FILE.1 ... FILE.N)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usagef("%s: %v", cmd, err)
	}
	if fs.NArg() > 0 {
		return nil, usagef("%s: unexpected argument %q", cmd, fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	var fileServices []serviceConfig
	if f.config != "" {
		fc, err := loadConfigFile(f.config)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cmd, err)
		}
		if err := f.applyFile(fc, set); err != nil {
			return nil, usagef("%s: config %s: %v", cmd, f.config, err)
		}
		fileServices = fc.Services
	}
	if set["vip"] || set["port"] || len(fileServices) == 0 {
		// Services from the flags replace the file's list.
		if f.vip == "" || f.ports == "" {
			return &f, nil // reported as missing by gatewayConfig
		}
		ports, err := parsePorts(f.ports)
		if err != nil {
			return nil, usagef("%s: %v", cmd, err)
		}
		for _, p := range ports {
			f.services = append(f.services, serviceSpec{vip: f.vip, vipName: "--vip", port: p, portName: "--port"})
		}
		return &f, nil
	}
	for i, sc := range fileServices {
		name := fmt.Sprintf("services[%d]", i)
		n, err := strconv.Atoi(strings.TrimSpace(sc.Port))
		if sc.Port == "" {
			return nil, usagef("%s: config %s: %s.port is required", cmd, f.config, name)
		}
		if err != nil || n < 1 || n > 65535 {
			return nil, usagef("%s: config %s: %s.port %q: use a number from 1 to 65535", cmd, f.config, name, sc.Port)
		}
		if sc.VIP == "" {
			return nil, usagef("%s: config %s: %s.vip is required", cmd, f.config, name)
		}
		f.services = append(f.services, serviceSpec{vip: sc.VIP, vipName: name + ".vip", port: uint16(n), portName: name + ".port"})
	}
	return &f, nil
}

// applyFile takes the file's value of every setting whose flag was not given.
func (f *runFlags) applyFile(fc *fileConfig, set map[string]bool) error {
	strs := []struct {
		flag, key string
		dst       *string
		val       string
	}{
		{"client-iface", "client_iface", &f.clientIface, fc.ClientIface},
		{"server-iface", "server_iface", &f.serverIface, fc.ServerIface},
		{"primary", "primary", &f.primary, fc.Primary},
		{"backup", "backup", &f.backup, fc.Backup},
		{"control", "control", &f.control, fc.Control},
		{"log-format", "log_format", &f.logFormat, fc.LogFormat},
		{"metrics", "metrics", &f.metrics, fc.Metrics},
		{"probe-http", "probe.http", &f.probeHTTP, fc.Probe.HTTP},
		{"pcap", "pcap", &f.pcap, fc.Pcap},
		{"pcap-max-bytes", "pcap_max_bytes", &f.pcapMax, fc.PcapMax},
	}
	for _, s := range strs {
		if !set[s.flag] && s.val != "" {
			*s.dst = s.val
			f.names["--"+s.flag] = s.key
		}
	}
	durs := []struct {
		flag, key string
		dst       *time.Duration
		val       string
	}{
		{"probe-interval", "probe.interval", &f.probeInterval, fc.Probe.Interval},
		{"probe-timeout", "probe.timeout", &f.probeTimeout, fc.Probe.Timeout},
		{"probe-busy-for", "probe.busy_for", &f.probeBusyFor, fc.Probe.BusyFor},
	}
	for _, d := range durs {
		if set[d.flag] || d.val == "" {
			continue
		}
		v, err := fileDuration(d.key, d.val)
		if err != nil {
			return err
		}
		*d.dst = v
		f.names["--"+d.flag] = d.key
	}
	ints := []struct {
		flag, key string
		dst       *int
		val       string
	}{
		{"probe-misses", "probe.misses", &f.probeMisses, fc.Probe.Misses},
		{"probe-rise", "probe.rise", &f.probeRise, fc.Probe.Rise},
		{"pcap-keep", "pcap_keep", &f.pcapKeep, fc.PcapKeep},
		{"max-half-open", "max_half_open", &f.maxHalfOpen, fc.MaxHalfOpen},
	}
	if !set["keep-offloads"] && fc.KeepOffloads != "" {
		v, err := strconv.ParseBool(strings.TrimSpace(fc.KeepOffloads))
		if err != nil {
			return usagef("keep_offloads %q: use true or false", fc.KeepOffloads)
		}
		f.keepOffloads = v
		f.names["--keep-offloads"] = "keep_offloads"
	}
	for _, n := range ints {
		if set[n.flag] || n.val == "" {
			continue
		}
		v, err := fileInt(n.key, n.val)
		if err != nil {
			return err
		}
		*n.dst = v
		f.names["--"+n.flag] = n.key
	}
	return nil
}

// name is how errors call a setting: its flag, or its key in the file.
func (f *runFlags) name(flag string) string {
	if n, ok := f.names[flag]; ok {
		return n
	}
	return flag
}

// gatewayConfig validates the settings into a datapath configuration. Flags
// and the configuration file go through it alike; every message names the
// setting, the value and what is allowed.
func (f *runFlags) gatewayConfig() (datapath.Config, error) {
	c, err := f.validate()
	if err != nil {
		cmd := f.cmd
		if cmd == "" {
			cmd = "run"
		}
		if f.config != "" {
			return c, usagef("%s: config %s: %v", cmd, f.config, err)
		}
		return c, usagef("%s: %v", cmd, err)
	}
	return c, nil
}

func (f *runFlags) validate() (datapath.Config, error) {
	var c datapath.Config
	if f.config != "" && len(f.services) == 0 && f.vip == "" && f.ports == "" {
		return c, usagef("services is required: list at least one {vip, port} (or give --vip and --port)")
	}
	for _, req := range []struct{ name, val string }{
		{"--client-iface", f.clientIface}, {"--server-iface", f.serverIface},
		{"--vip", f.vip}, {"--port", f.ports}, {"--primary", f.primary}, {"--backup", f.backup},
	} {
		service := req.name == "--vip" || req.name == "--port"
		if req.val != "" || service && len(f.services) > 0 {
			continue
		}
		if f.config != "" && !service {
			return c, usagef("%s is required (in the file, or as %s)", fileKey(req.name), req.name)
		}
		return c, usagef("%s is required", req.name)
	}
	if f.clientIface == f.serverIface {
		return c, usagef("%s and %s are both %q; the gateway needs the clients and the servers on different interfaces",
			f.name("--client-iface"), f.name("--server-iface"), f.clientIface)
	}
	var err error
	if c.Primary, err = parseIPv4(f.name("--primary"), f.primary); err != nil {
		return c, err
	}
	if c.Backup, err = parseIPv4(f.name("--backup"), f.backup); err != nil {
		return c, err
	}
	if c.Primary == c.Backup {
		return c, usagef("%s and %s are both %s; give the backup its own server", f.name("--primary"), f.name("--backup"), c.Primary)
	}
	byPort := map[uint16]netip.Addr{}
	for i, sv := range f.services {
		vip, err := parseIPv4(sv.vipName, sv.vip)
		if err != nil {
			return c, err
		}
		for _, s := range []struct {
			name string
			a    netip.Addr
		}{{f.name("--primary"), c.Primary}, {f.name("--backup"), c.Backup}} {
			if s.a == vip {
				return c, usagef("%s %s equals %s; the VIP must be an address no server owns (servers are reached by their real addresses)", sv.vipName, vip, s.name)
			}
		}
		if prev, ok := byPort[sv.port]; ok {
			if prev == vip {
				return c, usagef("services[%d]: %s:%d is listed twice", i, vip, sv.port)
			}
			// A server's reply names only its port: the flow table could
			// not tell which VIP it answers for.
			return c, usagef("services[%d]: port %d is already served by VIP %s: one VIP per port", i, sv.port, prev)
		}
		byPort[sv.port] = vip
		c.Services = append(c.Services, tcpstate.Service{VIP: vip.As4(), Port: sv.port})
	}
	if f.probeInterval < time.Millisecond || f.probeInterval > time.Minute {
		return c, usagef("%s %v: use a duration from 1ms to 1m (example: 10ms)", f.name("--probe-interval"), f.probeInterval)
	}
	if f.probeTimeout != 0 && (f.probeTimeout < time.Millisecond || f.probeTimeout > time.Minute) {
		return c, usagef("%s %v: use a duration from 1ms to 1m, or leave it out to use the interval", f.name("--probe-timeout"), f.probeTimeout)
	}
	if f.probeMisses < 1 || f.probeMisses > 1000 {
		return c, usagef("%s %d: use a count from 1 to 1000", f.name("--probe-misses"), f.probeMisses)
	}
	if f.probeRise < 1 || f.probeRise > 1000 {
		return c, usagef("%s %d: use a count from 1 to 1000", f.name("--probe-rise"), f.probeRise)
	}
	if f.probeBusyFor < time.Millisecond || f.probeBusyFor > time.Minute {
		return c, usagef("%s %v: use a duration from 1ms to 1m (default 1s)", f.name("--probe-busy-for"), f.probeBusyFor)
	}
	if f.probeHTTP != "" && !strings.HasPrefix(f.probeHTTP, "/") {
		return c, usagef("%s %q: give a path starting with / (example: /index.html)", f.name("--probe-http"), f.probeHTTP)
	}
	c.Probe = failover.Config{Interval: f.probeInterval, Misses: f.probeMisses, Rise: f.probeRise, Timeout: f.probeTimeout}
	c.ProbeHTTP = f.probeHTTP
	c.ProbeBusyFor = f.probeBusyFor
	if f.maxHalfOpen < 1 || f.maxHalfOpen > 1<<24 {
		return c, usagef("%s %d: use a count from 1 to %d", f.name("--max-half-open"), f.maxHalfOpen, 1<<24)
	}
	c.Table.MaxHalfOpen = f.maxHalfOpen
	if f.logFormat != "text" && f.logFormat != "json" {
		return c, usagef("%s %q: use text or json", f.name("--log-format"), f.logFormat)
	}
	if f.control == "" {
		return c, usagef("%s is empty: give the control socket's path (default %s)", f.name("--control"), defaultControl)
	}
	// A unix socket's path holds at most 107 bytes (sun_path).
	if len(f.control) > maxControlPath {
		return c, usagef("%s %q: %d bytes, more than a unix socket's path holds (%d); pick a shorter one", f.name("--control"), f.control, len(f.control), maxControlPath)
	}
	if dir := filepath.Dir(f.control); !isDir(dir) {
		return c, usagef("%s %q: directory %s does not exist; create it or pick another path", f.name("--control"), f.control, dir)
	}
	if f.metrics != "" {
		_, port, err := net.SplitHostPort(f.metrics)
		if err != nil {
			return c, usagef("%s %q: give host:port or :port (example: 127.0.0.1:9410)", f.name("--metrics"), f.metrics)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			return c, usagef("%s %q: port %q is not a number from 0 to 65535", f.name("--metrics"), f.metrics, port)
		}
	}
	if err := f.validatePcap(); err != nil {
		return c, err
	}
	c.ClientIface, c.ServerIface = f.clientIface, f.serverIface
	c.KeepOffloads = f.keepOffloads
	c.VerifyChecksums = true
	return c, nil
}

// maxControlPath is the longest path a unix socket's address holds.
const maxControlPath = 107

// isDir reports whether path is a directory.
func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

// Bounds of the pcap settings: a file must hold a useful capture, and the
// files together must not fill a disk by surprise.
const (
	minPcapBytes = 64 << 10
	maxPcapBytes = 1 << 40
	maxPcapKeep  = 1000
)

// validatePcap checks the pcap settings; the file's directory must exist.
func (f *runFlags) validatePcap() error {
	n, ok := parseSize(f.pcapMax)
	if !ok || n < minPcapBytes || n > maxPcapBytes {
		return usagef("%s %q: use a size from 64K to 1024G (example: 100M)", f.name("--pcap-max-bytes"), f.pcapMax)
	}
	if f.pcapKeep < 0 || f.pcapKeep > maxPcapKeep {
		return usagef("%s %d: use a count from 0 to %d", f.name("--pcap-keep"), f.pcapKeep, maxPcapKeep)
	}
	if f.pcap == "" {
		return nil
	}
	dir := filepath.Dir(f.pcap)
	if !isDir(dir) {
		return usagef("%s %s: directory %s does not exist; create it or pick another file", f.name("--pcap"), f.pcap, dir)
	}
	if fi, err := os.Stat(f.pcap); err == nil && fi.IsDir() {
		return usagef("%s %s is a directory: give a file name", f.name("--pcap"), f.pcap)
	}
	return nil
}

// pcapConfig is the tap configuration of validated settings.
func (f *runFlags) pcapConfig() pcaptap.Config {
	n, _ := parseSize(f.pcapMax)
	keep := f.pcapKeep
	if keep == 0 {
		keep = -1 // pcaptap: none kept
	}
	return pcaptap.Config{Path: f.pcap, MaxBytes: n, Keep: keep}
}

// fileKey is a flag's key in the configuration file.
func fileKey(flag string) string {
	return strings.ReplaceAll(strings.TrimPrefix(flag, "--"), "-", "_")
}

func parseIPv4(name, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, usagef("%s %q is not an IPv4 address (example: 192.0.2.10)", name, s)
	}
	if a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return netip.Addr{}, usagef("%s %s cannot be used: give a unicast address", name, s)
	}
	return a, nil
}

func parsePorts(s string) ([]uint16, error) {
	var ports []uint16
	seen := map[uint16]bool{}
	for _, part := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || n < 1 || n > 65535 {
			return nil, usagef("--port %q: each port must be a number from 1 to 65535, comma-separated (example: 80,443)", part)
		}
		if seen[uint16(n)] {
			return nil, usagef("--port %d is listed twice", n)
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
	// Bind the metrics address before touching the host: a taken port
	// stops the start, not a running gateway.
	var metricsLn net.Listener
	if f.metrics != "" {
		if metricsLn, err = net.Listen("tcp", f.metrics); err != nil {
			return fmt.Errorf("run: %s %s: %w", f.name("--metrics"), f.metrics, err)
		}
		defer metricsLn.Close()
	}
	var h slog.Handler = slog.NewTextHandler(stderr, nil)
	if f.logFormat == "json" {
		h = slog.NewJSONHandler(stderr, nil)
	}
	log := slog.New(h)
	cfg.Log = log

	// The control socket first: a gateway already running on it stops this
	// start before the pcap file, the offloads or the bypass tables are
	// touched.
	ctl, err := bindControl(f.control, log)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	defer func() {
		if err := ctl.Close(); err != nil {
			log.Error("remove control socket", "control", f.control, "err", err)
		} else {
			log.Info("control socket removed", "control", f.control)
		}
		log.Info("understudy stopped")
	}()

	if f.pcap != "" {
		tap, err := pcaptap.Open(f.pcapConfig())
		if err != nil {
			return fmt.Errorf("run: %s: %w", f.name("--pcap"), err)
		}
		cfg.Pcap = tap
		// Closed after the gateway (deferred first): the loop has stopped
		// handing it frames by then.
		defer func() {
			st := tap.Stats()
			if err := tap.Close(); err != nil {
				log.Error("close pcap", "err", err)
			} else {
				log.Info("pcap closed", "file", st.File, "frames", st.Frames, "dropped", st.Dropped)
			}
		}()
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	gw, err := datapath.Open(ctx, cfg)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	defer func() {
		if err := gw.Close(); err != nil {
			log.Error("close", "err", err)
		} else {
			log.Info("kernel-bypass tables removed, capture and transmit sockets closed")
		}
	}()
	ctl.serve(gw)
	if metricsLn != nil {
		ms := serveMetrics(metricsLn, gw)
		defer ms.Close()
	}
	log.Info("understudy running", "client_iface", cfg.ClientIface, "server_iface", cfg.ServerIface,
		"services", serviceList(cfg.Services), "primary", cfg.Primary, "backup", cfg.Backup, "control", f.control, "metrics", f.metrics, "pcap", f.pcap)
	err = gw.Run(ctx)
	reportShutdown(log, gw.Status(), gw.Flows(), maxShutdownFlows)
	return err
}

// serviceList writes the services as VIP:port, comma-separated.
func serviceList(ss []tcpstate.Service) string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = netip.AddrPortFrom(netip.AddrFrom4(s.VIP), s.Port).String()
	}
	return strings.Join(parts, ",")
}

// cmdCheck validates a configuration as run would, without root and without
// touching any interface, and prints a one-line summary.
func cmdCheck(args []string, stdout, stderr io.Writer) error {
	f, err := parseGatewayFlags("check", args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	c, err := f.gatewayConfig()
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, checkSummary(f, &c))
	return nil
}

func checkSummary(f *runFlags, c *datapath.Config) string {
	probe := "tcp syn (a raw SYN, answered SYN-ACK or RST; connect without CAP_NET_RAW)"
	if c.ProbeHTTP != "" {
		probe = "http GET " + c.ProbeHTTP
	}
	timeout := c.Probe.Timeout
	if timeout == 0 {
		timeout = c.Probe.Interval
	}
	metrics := "off"
	if f.metrics != "" {
		metrics = f.metrics
	}
	pcap := "off"
	if f.pcap != "" {
		pc := f.pcapConfig()
		pcap = fmt.Sprintf("%s (rotated at %d bytes, %d kept)", f.pcap, pc.MaxBytes, f.pcapKeep)
	}
	return fmt.Sprintf("OK: clients on %s, servers on %s; services %s; primary %s, backup %s; probe %s every %v (timeout %v, down after %d misses, up after %d, timeouts excused by data alone for %v); control %s; metrics %s; pcap %s; log %s",
		c.ClientIface, c.ServerIface, serviceList(c.Services), c.Primary, c.Backup, probe, c.Probe.Interval, timeout,
		c.Probe.Misses, c.Probe.Rise, c.ProbeBusyFor, f.control, metrics, pcap, f.logFormat)
}

// serveMetrics serves the gateway's Prometheus metrics on ln at /metrics.
func serveMetrics(ln net.Listener, gw *datapath.Gateway) *http.Server {
	reg := prometheus.NewRegistry()
	reg.MustRegister(datapath.NewCollector(gw), collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return srv
}

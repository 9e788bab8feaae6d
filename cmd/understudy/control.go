package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"understudy/datapath"
)

// control serves the gateway's status on a root-only unix socket.
type control struct {
	path string
	ln   net.Listener
	srv  *http.Server
}

// bindControl binds the control socket; serve starts answering on it. A
// socket left by a crashed run is replaced (and logged); one that still
// answers belongs to a running gateway, and the start stops there, before
// the host is touched: a second gateway must not replace the first one's
// kernel-bypass tables.
func bindControl(path string, log *slog.Logger) (*control, error) {
	if fi, err := os.Lstat(path); err == nil {
		// Only a socket is ours to replace: a wrong --control must not
		// delete the operator's file.
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("control socket path %s exists and is not a socket (%s); pick another --control", path, fi.Mode().Type())
		}
		if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s is in use by a running gateway; stop it first or pick another --control", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale control socket %s: %w", path, err)
		}
		log.Warn("replaced the control socket an earlier run left (nothing answered on it)", "control", path)
	}
	// Only root may connect: create the socket with no group or other bits.
	old := umaskRestrictive()
	ln, err := net.Listen("unix", path)
	umaskRestore(old)
	if err != nil {
		return nil, fmt.Errorf("listen on control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod control socket %s: %w", path, err)
	}
	return &control{path: path, ln: ln}, nil
}

// controlIdleTimeout is how long a control connection may sit idle
// between requests.
var controlIdleTimeout = 10 * time.Second

// serve answers the control commands for gw.
func (c *control) serve(gw *datapath.Gateway) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(gw.Status())
	})
	mux.HandleFunc("GET /flows", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(gw.Flows())
	})
	mux.HandleFunc("POST /failover", func(w http.ResponseWriter, r *http.Request) {
		last, err := gw.ManualFailover(r.URL.Query().Get("to"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(last)
	})
	mux.HandleFunc("POST /drain", func(w http.ResponseWriter, r *http.Request) {
		res, err := gw.Drain(r.URL.Query().Get("server"), r.URL.Query().Get("undo") == "")
		if err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(res)
	})
	// Each command is one request: an idle connection, or a client that
	// stops reading a large reply, is cut rather than kept for ever.
	c.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: controlIdleTimeout, WriteTimeout: 30 * time.Second}
	go c.srv.Serve(c.ln)
}

// Close stops answering and removes the socket.
func (c *control) Close() error {
	var err error
	if c.srv != nil {
		err = c.srv.Close()
	} else {
		err = c.ln.Close()
	}
	if rerr := os.Remove(c.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
		err = rerr
	}
	return err
}

// controlClient talks HTTP over the control socket.
func controlClient(path string) *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}
}

func controlGet(path, what string) ([]byte, error) {
	return controlDo(path, http.MethodGet, what)
}

func controlDo(path, method, what string) ([]byte, error) {
	req, err := http.NewRequest(method, "http://understudy/"+what, nil)
	if err != nil {
		return nil, err
	}
	resp, err := controlClient(path).Do(req)
	if err != nil {
		return nil, controlError(path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read reply from %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, errors.New(strings.TrimSpace(string(body)))
	}
	return body, nil
}

// controlError says in one line why the gateway could not be reached.
func controlError(path string, err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("no gateway answers on %s: the socket does not exist; is `understudy run` running (with this --control)?", path)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("no gateway answers on %s: nothing listens on the socket (a gateway that ended without removing it); start `understudy run`", path)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("control socket %s: permission denied: the socket is root-only, run the command as root", path)
	case errors.Is(err, syscall.ENOTSOCK), errors.Is(err, syscall.EPROTOTYPE):
		return fmt.Errorf("%s is not a control socket: check --control", path)
	case errors.Is(err, context.DeadlineExceeded) || os.IsTimeout(err):
		return fmt.Errorf("the gateway on %s did not answer within 5s: it may be overloaded or hung", path)
	}
	return fmt.Errorf("query %s: %w", path, err)
}

func cmdStatus(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the full status as JSON")
	path := fs.String("control", defaultControl, "control socket path")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usagef("status: %v", err)
	}
	if fs.NArg() > 0 {
		return usagef("status: unexpected argument %q", fs.Arg(0))
	}
	body, err := controlGet(*path, "status")
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	if *asJSON {
		_, err = stdout.Write(body)
		return err
	}
	var st datapath.Status
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("status: decode reply: %w", err)
	}
	printStatus(stdout, &st)
	return nil
}

func printStatus(w io.Writer, st *datapath.Status) {
	fmt.Fprintf(w, "up %.0fs  client %s  servers %s\n", st.UptimeSeconds, st.ClientIface, st.ServerIface)
	for _, s := range st.Services {
		fmt.Fprintf(w, "service %s:%d\n", s.VIP, s.Port)
	}
	for _, s := range st.Servers {
		drained := ""
		if s.Drained {
			drained = fmt.Sprintf("  drained (%d flows still use it)", s.Flows)
		}
		fmt.Fprintf(w, "%-8s %-15s %-8s %-7s %d flows%s\n", s.Name, s.Addr, s.Role, s.Health, s.Flows, drained)
	}
	switch nf := st.NewFlows; {
	case nf.Live == "":
		fmt.Fprintln(w, "new flows: no server is active")
	case nf.Shadow == "":
		fmt.Fprintf(w, "new flows: %s only, unprotected (%s)\n", nf.Live, nf.Why)
	default:
		fmt.Fprintf(w, "new flows: %s, shadowed by %s\n", nf.Live, nf.Shadow)
	}
	fmt.Fprintf(w, "flows %d (half-open %d, protected %d, unprotected %d)\n",
		st.Flows.Total, st.Flows.HalfOpen, st.Flows.Protected, st.Flows.Unprotected)
	fmt.Fprintf(w, "frames in: client %d, server %d\n", st.Packets.ClientRx, st.Packets.ServerRx)
	if len(st.Traffic) > 0 {
		var parts [2][]string
		for _, t := range st.Traffic {
			i := 0
			if t.Direction == "out" {
				i = 1
			}
			parts[i] = append(parts[i], fmt.Sprintf("%s %d (%s)", t.Leg, t.Packets, byteSize(t.Bytes)))
		}
		fmt.Fprintf(w, "traffic in: %s; out: %s\n", strings.Join(parts[0], ", "), strings.Join(parts[1], ", "))
	}
	var drops []string
	for k, v := range st.Drops {
		if v > 0 {
			drops = append(drops, fmt.Sprintf("%s=%d", k, v))
		}
	}
	sort.Strings(drops)
	if len(drops) == 0 {
		drops = []string{"none"}
	}
	fmt.Fprintf(w, "drops: %s\n", strings.Join(drops, " "))
	fmt.Fprintf(w, "kernel bypass: client dropped %d, server dropped %d, kernel forwarded %d\n",
		st.KernelBypass.ClientDropped, st.KernelBypass.ServerDropped, st.KernelBypass.KernelForwarded)
	if p := st.Pcap; p != nil {
		fmt.Fprintf(w, "pcap %s: %d frames written, %d dropped, %d rotations, %d errors\n", p.File, p.Frames, p.Dropped, p.Rotations, p.Errors)
	}
	if st.LogSuppressed > 0 {
		fmt.Fprintf(w, "log lines suppressed by the rate limit: %d\n", st.LogSuppressed)
	}
	if l := st.LastFailover; l != nil {
		fmt.Fprintf(w, "last failover: %s %s failed (%s); detected in %.1f ms; %d flows moved, %d reset, %d unprotected; longest client stall %.1f ms over %d flows\n",
			l.At.Format(time.RFC3339Nano), l.Server, l.Cause, l.DetectedMS, l.FlowsMoved, l.FlowsReset, l.FlowsAlone, l.MaxStallMS, l.StallFlows)
	} else {
		fmt.Fprintln(w, "last failover: none")
	}
}

func cmdFailover(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("failover", flag.ContinueOnError)
	to := fs.String("to", "", "server to make active: backup or primary (default: the standby)")
	path := fs.String("control", defaultControl, "control socket path")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usagef("failover: %v", err)
	}
	// "failover primary" would otherwise move every flow to the standby:
	// the opposite of what it reads as.
	if fs.NArg() > 0 {
		return usagef("failover: unexpected argument %q: name the server to make active with --to (backup or primary)", fs.Arg(0))
	}
	if *to != "" && *to != "backup" && *to != "primary" {
		return usagef("failover: --to %q: use backup or primary", *to)
	}
	body, err := controlDo(*path, http.MethodPost, "failover?to="+*to)
	if err != nil {
		return fmt.Errorf("failover: %w", err)
	}
	var f datapath.Failover
	if err := json.Unmarshal(body, &f); err != nil {
		return fmt.Errorf("failover: decode reply: %w", err)
	}
	fmt.Fprintf(stdout, "failed over from %s: %d flows moved, %d reset, %d unprotected\n", f.Server, f.FlowsMoved, f.FlowsReset, f.FlowsAlone)
	return nil
}

func cmdFlows(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("flows", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the flows as JSON")
	path := fs.String("control", defaultControl, "control socket path")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usagef("flows: %v", err)
	}
	if fs.NArg() > 0 {
		return usagef("flows: unexpected argument %q", fs.Arg(0))
	}
	body, err := controlGet(*path, "flows")
	if err != nil {
		return fmt.Errorf("flows: %w", err)
	}
	if *asJSON {
		_, err = stdout.Write(body)
		return err
	}
	return printFlows(stdout, body)
}

// printFlows writes one line per flow, ordered by VIP then client.
func printFlows(w io.Writer, body []byte) error {
	var flows []datapath.FlowInfo
	if err := json.Unmarshal(body, &flows); err != nil {
		return fmt.Errorf("flows: decode reply: %w", err)
	}
	sortFlows(flows)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT\tVIP\tSTATE\tPROTECTION\tFROM CLIENT\tTO CLIENT\tLIVE")
	for _, f := range flows {
		prot := f.Protection
		if f.Protection == "unprotected" && f.Why != "" {
			prot += ":" + f.Why
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", f.Client, f.VIP, f.State, prot, f.FromClient, f.ToClient, f.Live)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(flows) == 0 {
		fmt.Fprintln(w, "no flows")
	}
	return nil
}

// cmdDrain takes a server out of new flows, or with --undo returns it.
// Flags may come before or after the server's name.
func cmdDrain(name string, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	undo := fs.Bool("undo", name == "undrain", "return the server to new flows")
	path := fs.String("control", defaultControl, "control socket path")
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil
			}
			return usagef("%s: %v", name, err)
		}
		if fs.NArg() == 0 {
			break
		}
		rest = append(rest, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(rest) != 1 {
		return usagef("%s: name one server: primary or backup (example: understudy %s primary)", name, name)
	}
	server := rest[0]
	if server != "primary" && server != "backup" {
		return usagef("%s: server %q: use primary or backup", name, server)
	}
	q := "drain?server=" + server
	if *undo {
		q += "&undo=1"
	}
	body, err := controlDo(*path, http.MethodPost, q)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	var res datapath.DrainResult
	if err := json.Unmarshal(body, &res); err != nil {
		return fmt.Errorf("%s: decode reply: %w", name, err)
	}
	if res.Drained {
		fmt.Fprintf(stdout, "%s drained: new flows go to %s only, unprotected; %d open flows still use %s\n",
			res.Server, res.NewFlows.Live, res.Flows, res.Server)
	} else {
		fmt.Fprintf(stdout, "%s takes new flows again (new flows: %s", res.Server, res.NewFlows.Live)
		if res.NewFlows.Shadow != "" {
			fmt.Fprintf(stdout, ", shadowed by %s", res.NewFlows.Shadow)
		}
		fmt.Fprintln(stdout, ")")
	}
	return nil
}

// byteSize writes a byte count for people: 1.5 MiB.
func byteSize(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/unit, 0
	for v >= unit && i < 4 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTP"[i])
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sort"
	"strings"
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

// listenControl binds the control socket. A socket left by a crashed run is
// replaced; one that still answers belongs to a running gateway and is not.
func listenControl(path string, gw *datapath.Gateway) (*control, error) {
	if _, err := os.Stat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s is in use by a running gateway; stop it first or pick another --control", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale control socket %s: %w", path, err)
		}
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
	c := &control{path: path, ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	go c.srv.Serve(ln)
	return c, nil
}

func (c *control) Close() error {
	err := c.srv.Close()
	os.Remove(c.path)
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
		if errors.Is(err, os.ErrNotExist) || strings.Contains(err.Error(), "no such file") || strings.Contains(err.Error(), "connection refused") {
			return nil, fmt.Errorf("no gateway answers on %s: is `understudy run` running (with this --control)?", path)
		}
		return nil, fmt.Errorf("query %s: %w", path, err)
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
		fmt.Fprintf(w, "%-8s %-15s %-8s %s\n", s.Name, s.Addr, s.Role, s.Health)
	}
	fmt.Fprintf(w, "flows %d (half-open %d, protected %d, unprotected %d)\n",
		st.Flows.Total, st.Flows.HalfOpen, st.Flows.Protected, st.Flows.Unprotected)
	fmt.Fprintf(w, "frames in: client %d, server %d\n", st.Packets.ClientRx, st.Packets.ServerRx)
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
	cmp := func(a, b string) int {
		pa, erra := netip.ParseAddrPort(a)
		pb, errb := netip.ParseAddrPort(b)
		if erra != nil || errb != nil {
			return strings.Compare(a, b)
		}
		return pa.Compare(pb)
	}
	sort.SliceStable(flows, func(i, j int) bool {
		if c := cmp(flows[i].VIP, flows[j].VIP); c != 0 {
			return c < 0
		}
		return cmp(flows[i].Client, flows[j].Client) < 0
	})
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

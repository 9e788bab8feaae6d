package testbed

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"understudy/datapath"
)

// Operating the gateway end to end (root): the control commands an operator
// uses, run as the operator runs them, against a real gateway.

// flowsJSON is "understudy flows --json" decoded.
func flowsJSON(t *testing.T, b *Bed) []datapath.FlowInfo {
	t.Helper()
	out, err := b.Understudy("flows", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var fl []datapath.FlowInfo
	if err := json.Unmarshal([]byte(out), &fl); err != nil {
		t.Fatalf("flows --json: %v: %q", err, out)
	}
	return fl
}

func accessCount(b *Bed, s Server, uri string) int {
	n := 0
	for _, e := range b.AccessLog(s) {
		if e.URI == uri {
			n++
		}
	}
	return n
}

// TestOperateControl: status, flows, drain (new flows avoid the drained
// server while a download on it finishes), undrain, failover --to, and
// every command failing clearly once the gateway is stopped.
func TestOperateControl(t *testing.T) {
	b := upFailover(t)
	gw := b.StartGateway(failoverArgs...)
	for _, s := range []Server{Pri, Bak} {
		role := map[Server]string{Pri: "active", Bak: "standby"}[s]
		if err := b.WaitServerState(s, role, "up", 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	st := gatewayStatus(t, b)
	if nf := st.NewFlows; nf.Live != "primary" || nf.Shadow != "backup" {
		t.Fatalf("new flows at start: %+v", nf)
	}
	text, err := b.Understudy("status")
	if err != nil || !strings.Contains(text, "new flows: primary, shadowed by backup") {
		t.Fatalf("status: %v\n%s", err, text)
	}

	// A download on both servers, still running when the primary is drained.
	big := b.Background(func() (*Transfer, error) {
		return b.Download("/big.bin", "--limit-rate", "16M", "--max-time", "60")
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		fl := flowsJSON(t, b)
		if len(fl) == 1 && fl[0].ToClient > 0 && fl[0].Protection == "protected" && fl[0].Live == "primary" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no protected download in flows --json: %+v", fl)
		}
		time.Sleep(50 * time.Millisecond)
	}

	out, err := b.Understudy("drain", "primary")
	if err != nil || !strings.Contains(out, "primary drained: new flows go to backup only, unprotected; 1 open flows still use primary") {
		t.Fatalf("drain primary: %v: %q", err, out)
	}
	st = gatewayStatus(t, b)
	if p := st.Servers[0]; !p.Drained || p.Flows != 1 || st.NewFlows.Live != "backup" || st.NewFlows.Why != "drained" {
		t.Fatalf("status after drain: primary %+v, new flows %+v", p, st.NewFlows)
	}
	if text, _ := b.Understudy("status"); !strings.Contains(text, "drained (1 flows still use it)") ||
		!strings.Contains(text, "new flows: backup only, unprotected (drained)") {
		t.Errorf("status text after drain:\n%s", text)
	}

	// New flows go to the backup alone.
	for i := 0; i < 3; i++ {
		tr, err := b.Download("/1k.bin", "--max-time", "10")
		if err != nil || tr.SHA256 != b.SHA256("1k.bin") {
			t.Fatalf("new flow while primary drained: %v (%+v)", err, tr)
		}
	}
	if n := accessCount(b, Pri, "/1k.bin"); n != 0 {
		t.Errorf("drained primary served /1k.bin %d times", n)
	}
	if !waitFor(5*time.Second, func() bool { return accessCount(b, Bak, "/1k.bin") == 3 }) {
		t.Errorf("backup served /1k.bin %d times, want 3", accessCount(b, Bak, "/1k.bin"))
	}
	drained := 0
	for _, f := range flowsJSON(t, b) {
		if f.Why == "drained" {
			drained++
			if f.Live != "backup" || f.Protection != "unprotected" || f.ToClient < 1024 {
				t.Errorf("flow of a drained period: %+v", f)
			}
		}
	}
	if drained != 3 {
		t.Errorf("%d flows unprotected:drained in flows --json, want 3", drained)
	}

	// The flow that was on the primary finishes there, whole.
	tr, err := big.Wait()
	if err != nil || tr.SHA256 != b.SHA256("big.bin") || tr.NumConnects != 1 {
		t.Fatalf("download across the drain: %v (%+v)", err, tr)
	}
	if !waitFor(5*time.Second, func() bool { return served(b, Pri, "/big.bin", 64<<20) }) {
		t.Errorf("primary did not serve the whole /big.bin: %+v", b.AccessLog(Pri))
	}
	if st := gatewayStatus(t, b); st.Servers[0].Flows != 0 {
		t.Errorf("primary still has %d flows after the download ended", st.Servers[0].Flows)
	}

	out, err = b.Understudy("drain", "--undo", "primary")
	if err != nil || !strings.Contains(out, "primary takes new flows again (new flows: primary, shadowed by backup)") {
		t.Fatalf("drain --undo: %v: %q", err, out)
	}
	if tr, err := b.Download("/1k.bin", "--max-time", "10"); err != nil || tr.SHA256 != b.SHA256("1k.bin") {
		t.Fatalf("after undrain: %v", err)
	}
	if !waitFor(5*time.Second, func() bool { return accessCount(b, Pri, "/1k.bin") == 1 && accessCount(b, Bak, "/1k.bin") == 4 }) {
		t.Errorf("after undrain: primary served /1k.bin %d times (want 1), backup %d (want 4)",
			accessCount(b, Pri, "/1k.bin"), accessCount(b, Bak, "/1k.bin"))
	}

	out, err = b.Understudy("failover", "--to", "backup")
	if err != nil || !strings.Contains(out, "failed over from primary") {
		t.Fatalf("failover --to backup: %v: %q", err, out)
	}
	if err := b.WaitServerState(Bak, "active", "up", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Understudy("failover", "--to", "backup"); err == nil || !strings.Contains(err.Error(), "it is already active") {
		t.Errorf("second failover --to backup: %v", err)
	}

	if err := gw.Stop(); err != nil {
		t.Fatalf("gateway stop: %v", err)
	}
	if _, err := os.Stat(b.ControlSocket()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("control socket after SIGTERM: %v", err)
	}
	for _, c := range [][]string{{"status"}, {"flows"}, {"failover"}, {"drain", "primary"}} {
		_, err := b.Understudy(c...)
		if err == nil || !strings.Contains(err.Error(), "exit status 1") || !strings.Contains(err.Error(), "no gateway answers on") {
			t.Errorf("%v against a stopped gateway: %v", c, err)
		}
	}
}

// waitFor polls cond every 20ms until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// TestOperateMetricsAndPcap: a download through the gateway, the primary
// killed in its middle; the metrics scraped over HTTP then show the
// failover, its detection and stall, traffic on every leg, and the
// kernel-bypass state; the --pcap files, read back with gopacket, hold
// both directions on both sides, rotated by size.
func TestOperateMetricsAndPcap(t *testing.T) {
	b := upFailover(t)
	const addr = "127.0.0.1:9410"
	pcap := filepath.Join(b.Dir, "gw.pcap")
	gw := b.StartGateway(append(failoverArgs, "--metrics", addr, "--pcap", pcap, "--pcap-max-bytes", "8M", "--pcap-keep", "2")...)
	if err := b.WaitServerState(Bak, "standby", "up", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	run := b.Background(func() (*Transfer, error) {
		return b.Download("/big.bin", "--limit-rate", "40M", "--max-time", "30")
	})
	time.Sleep(faultAt)
	b.KillServer(Pri)
	tr, err := run.Wait()
	if err != nil || tr.SHA256 != b.SHA256("big.bin") {
		t.Fatalf("download across the failover: %v (%+v)", err, tr)
	}
	if err := b.WaitServerState(Bak, "active", "up", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	m, err := b.ScrapeMetrics(addr)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name   string
		labels []string
		ok     func(float64) bool
		want   string
	}{
		{"understudy_failovers_total", nil, func(v float64) bool { return v == 1 }, "1"},
		{"understudy_failover_detection_seconds", nil, func(v float64) bool { return v >= 1 }, "count >= 1"},
		{"understudy_events_total", []string{"event=takeovers"}, func(v float64) bool { return v >= 1 }, ">= 1"},
		{"understudy_server_up", []string{"server=primary"}, func(v float64) bool { return v == 0 }, "0"},
		{"understudy_server_up", []string{"server=backup"}, func(v float64) bool { return v == 1 }, "1"},
		{"understudy_server_active", []string{"server=backup"}, func(v float64) bool { return v == 1 }, "1"},
		{"understudy_server_active", []string{"server=primary"}, func(v float64) bool { return v == 0 }, "0"},
		{"understudy_bytes_total", []string{"direction=out", "leg=client"}, func(v float64) bool { return v > 64<<20 }, "> 64 MiB"},
		{"understudy_bytes_total", []string{"direction=in", "leg=primary"}, func(v float64) bool { return v > 0 }, "> 0"},
		{"understudy_bytes_total", []string{"direction=in", "leg=backup"}, func(v float64) bool { return v > 64<<20 }, "> 64 MiB"},
		{"understudy_packets_total", []string{"direction=in", "leg=client"}, func(v float64) bool { return v > 0 }, "> 0"},
		{"understudy_packets_total", []string{"direction=out", "leg=primary"}, func(v float64) bool { return v > 0 }, "> 0"},
		{"understudy_packets_total", []string{"direction=out", "leg=backup"}, func(v float64) bool { return v > 0 }, "> 0"},
		{"understudy_probes_total", []string{"server=backup", "result=ok"}, func(v float64) bool { return v > 0 }, "> 0"},
		{"understudy_probes_total", []string{"server=primary", "result=failed"}, func(v float64) bool { return v > 0 }, "> 0 (refused after the kill)"},
		{"understudy_flows_unprotected", []string{"reason=took_over"}, func(v float64) bool { return v == 1 }, "1"},
		{"understudy_kernel_bypass_installed", nil, func(v float64) bool { return v == 1 }, "1"},
		{"understudy_kernel_bypass_dropped_packets_total", []string{"side=client"}, func(v float64) bool { return v > 0 }, "> 0"},
		{"understudy_kernel_forwarded_packets_total", nil, func(v float64) bool { return v == 0 }, "0"},
		{"understudy_divergences_total", nil, func(v float64) bool { return v == 0 }, "0"},
		{"understudy_pcap_frames_total", nil, func(v float64) bool { return v > 0 }, "> 0"},
		{"understudy_pcap_rotations_total", nil, func(v float64) bool { return v >= 2 }, ">= 2"},
	}
	for _, c := range checks {
		v, ok := m.Value(c.name, c.labels...)
		if !ok || !c.ok(v) {
			t.Errorf("%s%v = %v (present %v), want %s", c.name, c.labels, v, ok, c.want)
		}
	}
	// One stall observed per moved flow whose client was waiting: at most
	// the one flow here, and at least what the last failover's record
	// counts (the flow may also have moved on its own evidence, a FIN from
	// the killed server, before the probes declared it down).
	st := gatewayStatus(t, b)
	if v, ok := m.Value("understudy_client_stall_seconds"); !ok || st.LastFailover == nil || v < float64(st.LastFailover.StallFlows) || v > 1 {
		t.Errorf("understudy_client_stall_seconds count %v (present %v), status last failover %+v", v, ok, st.LastFailover)
	}
	// The flow's takeover is logged with its 4-tuple.
	if log := string(mustRead(t, filepath.Join(b.Dir, "gateway.log"))); !strings.Contains(log, `msg="flow taken over" client=`+ClientIP+":") ||
		!strings.Contains(log, "vip="+VIP+":80 failed=primary live=backup") {
		t.Errorf("no flow line for the takeover in the gateway log:\n%s", log)
	}
	if d, _ := m.Value("understudy_pcap_dropped_frames_total"); d > 0 {
		t.Logf("pcap dropped %v frames (its buffer was full)", d)
	}

	// A ruleset flushed under the gateway shows as a bypass no longer installed.
	b.MustRun(b.Gateway(), "nft", "delete", "table", "netdev", "understudy")
	if m, err := b.ScrapeMetrics(addr); err != nil {
		t.Fatal(err)
	} else if v, ok := m.Value("understudy_kernel_bypass_installed"); !ok || v != 0 {
		t.Errorf("understudy_kernel_bypass_installed = %v (present %v) after the table was deleted, want 0", v, ok)
	}

	// Stopping the gateway flushes the capture.
	if err := gw.Stop(); err != nil {
		t.Fatal(err)
	}
	files := []string{pcap, pcap + ".1", pcap + ".2"}
	if _, err := os.Stat(pcap + ".3"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s.3 exists with --pcap-keep 2 (%v)", pcap, err)
	}
	var all Packets
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > 8<<20 {
			t.Errorf("%s: %d bytes, over --pcap-max-bytes 8M", f, fi.Size())
		}
		ps, err := ReadPcapFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, ps...)
	}
	in, out := all.Direction(layers.LinuxSLLPacketTypeHost), all.Direction(layers.LinuxSLLPacketTypeOutgoing)
	if len(in)+len(out) != len(all) {
		t.Errorf("%d frames neither in nor out", len(all)-len(in)-len(out))
	}
	// The oldest files were rotated away: the handshake may be gone, the
	// reply's end (from the backup, after the takeover) is there.
	sides := []struct {
		name string
		ps   Packets
	}{
		{"received from the client", in.From(ClientIP).To(VIP)},
		{"received from the backup", in.From(BackupIP).To(ClientIP)},
		{"sent to the client", out.From(VIP).To(ClientIP)},
		{"sent to the backup", out.From(ClientIP).To(BackupIP)},
	}
	for _, s := range sides {
		if len(s.ps.TCP()) == 0 {
			t.Errorf("no frames %s in the pcap (%d in, %d out)", s.name, len(in), len(out))
		}
	}
	if fins := out.From(VIP).To(ClientIP).Filter(func(p gopacket.Packet) bool { tcp := TCP(p); return tcp != nil && tcp.FIN }); len(fins) == 0 {
		t.Errorf("the reply's FIN to the client is not in the newest capture")
	}
}

// nftTables lists the nftables tables of the gateway's namespace.
func nftTables(t testing.TB, b *Bed) string {
	t.Helper()
	out, err := b.Output(b.Gateway(), "nft", "list", "tables")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// logSince is the gateway log past offset (a restarted gateway appends).
func logSince(t *testing.T, b *Bed, offset int) string {
	t.Helper()
	data := mustRead(t, filepath.Join(b.Dir, "gateway.log"))
	return string(data[offset:])
}

// TestOperateShutdownAndRestart: a second gateway on the same socket stops
// before touching the first one's tables; after kill -9 the socket and
// tables stay behind, and a restart replaces them (saying so) and serves;
// SIGTERM reports the open flows by their 4-tuple and removes the tables
// and the socket.
func TestOperateShutdownAndRestart(t *testing.T) {
	b := upFailover(t)
	RequireTool(t, "nft")
	gw := b.StartGateway(failoverArgs...)
	if err := b.WaitServerState(Bak, "standby", "up", 10*time.Second); err != nil {
		t.Fatal(err)
	}

	// A second gateway with the same control socket refuses to start.
	second, err := b.Output(b.Gateway(), binary(t, b.Root, "understudy"), append(b.GatewayArgs(), failoverArgs...)...)
	if err == nil || !strings.Contains(err.Error(), "is in use by a running gateway") {
		t.Fatalf("second gateway: %v %s", err, second)
	}
	if tables := nftTables(t, b); !strings.Contains(tables, "table netdev understudy") {
		t.Fatalf("the first gateway's tables are gone after the second one's start:\n%s", tables)
	}
	if tr, err := b.Download("/1k.bin", "--max-time", "10"); err != nil || tr.SHA256 != b.SHA256("1k.bin") {
		t.Fatalf("through the first gateway after the second one's attempt: %v", err)
	}

	// kill -9: the socket and the tables stay behind.
	gw.Kill()
	if _, err := os.Stat(b.ControlSocket()); err != nil {
		t.Fatalf("control socket after kill -9: %v", err)
	}
	if tables := nftTables(t, b); !strings.Contains(tables, "table netdev understudy") || !strings.Contains(tables, "table inet understudy_watch") {
		t.Fatalf("tables after kill -9:\n%s", tables)
	}
	if _, err := b.Understudy("status"); err == nil || !strings.Contains(err.Error(), "nothing listens on the socket") {
		t.Errorf("status against the dead gateway's socket: %v", err)
	}

	offset := len(mustRead(t, filepath.Join(b.Dir, "gateway.log")))
	gw = b.RestartGateway(failoverArgs...)
	log := logSince(t, b, offset)
	for _, want := range []string{"replaced the control socket an earlier run left", "replacing the kernel-bypass tables an earlier run left"} {
		if !strings.Contains(log, want) {
			t.Errorf("restart log lacks %q:\n%s", want, log)
		}
	}
	if tables := nftTables(t, b); strings.Count(tables, "table netdev understudy\n") != 1 || strings.Count(tables, "table inet understudy_watch\n") != 1 {
		t.Errorf("tables after the restart:\n%s", tables)
	}
	if err := b.WaitServerState(Bak, "standby", "up", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if tr, err := b.Download("/1k.bin", "--max-time", "10"); err != nil || tr.SHA256 != b.SHA256("1k.bin") {
		t.Fatalf("through the restarted gateway: %v", err)
	}

	// SIGTERM with a download open: reported, then everything removed.
	run := b.Background(func() (*Transfer, error) {
		return b.Download("/big.bin", "--limit-rate", "4M", "--max-time", "8")
	})
	var port int
	if !waitFor(10*time.Second, func() bool {
		for _, f := range flowsJSON(t, b) {
			if f.State == "established" && f.ToClient > 0 {
				port = int(f.Client.Port())
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no established download in flows: %+v", flowsJSON(t, b))
	}
	if err := gw.Stop(); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	if !gw.Cmd.ProcessState.Success() {
		t.Errorf("gateway exit status after SIGTERM: %v", gw.Cmd.ProcessState)
	}
	if _, err := os.Stat(b.ControlSocket()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("control socket after SIGTERM: %v", err)
	}
	if tables := nftTables(t, b); strings.Contains(tables, "understudy") {
		t.Errorf("tables after SIGTERM:\n%s", tables)
	}
	log = logSince(t, b, offset)
	flowLine := fmt.Sprintf(`msg="flow open at shutdown" client=%s:%d vip=%s:%d state=established protection=protected`, ClientIP, port, VIP, Port)
	for _, want := range []string{`msg="understudy stopping: flows at shutdown"`, " open=1 ", flowLine,
		"kernel-bypass tables removed", "control socket removed", `msg="understudy stopped"`} {
		if !strings.Contains(log, want) {
			t.Errorf("shutdown log lacks %q:\n%s", want, log)
		}
	}
	if tr, err := run.Wait(); err == nil {
		t.Logf("the download finished before the gateway stopped (%d bytes)", tr.Bytes)
	}
}

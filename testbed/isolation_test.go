package testbed

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// kernelView is what the client gets from traffic that is not VIP:port:
// the gateway host's kernel routes it, with or without the gateway.
type kernelView struct {
	ping      error  // ping of the primary's own address
	serverSum string // sha256 of a reply from the primary's address on another port
	otherPort string // curl's exit for the VIP on a port the gateway does not serve
}

// isolationPort is a port of the primary's own address the gateway does not
// serve; isolationBody is what answers there.
const (
	isolationPort = 8080
	isolationBody = "routed by the kernel, not by the gateway\n"
)

// serveOtherPort answers HTTP on the primary's address at isolationPort,
// from a listener opened in its namespace, until the test ends.
func (b *Bed) serveOtherPort(t *testing.T) {
	t.Helper()
	var ln net.Listener
	err := inNS(b.Primary(), func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(PrimaryIP, strconv.Itoa(isolationPort)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, isolationBody)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

func (b *Bed) kernelView(t *testing.T) kernelView {
	t.Helper()
	var v kernelView
	v.ping = b.Run(b.Client(), "ping", "-c", "3", "-i", "0.2", "-W", "2", PrimaryIP)
	tr, err := b.Download("http://"+PrimaryIP+":"+strconv.Itoa(isolationPort)+"/", "--max-time", "5")
	if err != nil {
		t.Fatalf("the primary's own address on port %d: %v", isolationPort, err)
	}
	v.serverSum = tr.SHA256
	err = b.Cmd(b.Client(), "curl", "-sS", "-o", "/dev/null", "--max-time", "3", "http://"+VIP+":8080/").Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		v.otherPort = "curl exit " + strconv.Itoa(ee.ExitCode())
	case err != nil:
		t.Fatal(err)
	default:
		v.otherPort = "answered"
	}
	return v
}

// TestIsolation: the gateway touches only VIP:port traffic; frames on the
// server LAN that claim to be a server's reply from the wrong MAC, the wrong
// address (another server's, or the VIP's) or to no connection are dropped
// and counted, and nothing a server
// sends reaches the client unless that server is the flow's live leg; only
// root may use the control socket.
func TestIsolation(t *testing.T) {
	b := Up(t, Options{})
	RequireTool(t, "tcpdump")
	RequireTool(t, "ping")
	b.serveOtherPort(t)
	without := b.kernelView(t)
	b.StartGateway(hostileArgs...)

	t.Run("only VIP:port traffic is touched", func(t *testing.T) {
		before := gatewayStatus(t, b)
		with := b.kernelView(t)
		after := gatewayStatus(t, b)
		if (with.ping == nil) != (without.ping == nil) || with.serverSum != without.serverSum || with.otherPort != without.otherPort {
			t.Errorf("the kernel's routing changed under the gateway: without %+v, with %+v", without, with)
		}
		if with.ping != nil || with.serverSum != sha256Hex([]byte(isolationBody)) {
			t.Errorf("routed traffic: ping %v, reply sha256 %s", with.ping, with.serverSum)
		}
		if after.Packets.ClientRx != before.Packets.ClientRx || after.Packets.ServerRx != before.Packets.ServerRx {
			t.Errorf("the datapath saw routed traffic: client_rx %d -> %d, server_rx %d -> %d",
				before.Packets.ClientRx, after.Packets.ClientRx, before.Packets.ServerRx, after.Packets.ServerRx)
		}
		t.Logf("routed by the kernel alike with and without the gateway: ping %v, HTTP from %s:%d, VIP:8080 %s",
			with.ping == nil, PrimaryIP, isolationPort, with.otherPort)
	})

	t.Run("spoofed server replies", func(t *testing.T) {
		b := b.For(t)
		const port = 45401
		marker := []byte("SPOOFED-SERVER-REPLY")
		capture := b.StartTcpdump(b.Client(), "eth0", "tcp and src host "+VIP)
		run := hostileDownload(b, port)
		gwMAC := b.MAC(b.Gateway(), ServerIface)
		fromPri := b.Injector(b.Primary(), "eth0", gwMAC)
		fromBak := b.Injector(b.Backup(), "eth0", gwMAC)
		client := netip.AddrPortFrom(clientIP, port)
		pri := netip.AddrPortFrom(netip.MustParseAddr(PrimaryIP), Port)
		bak := netip.AddrPortFrom(netip.MustParseAddr(BackupIP), Port)
		// Wait until the connection is in the flow table.
		observeClient(t, b, port)
		before := gatewayStatus(t, b)
		const reps = 25
		seg := func(src netip.AddrPort, dst netip.AddrPort, mac net.HardwareAddr) Segment {
			return Segment{SrcMAC: mac, Src: src, Dst: dst, Seq: 1 << 20, Ack: 1, ACK: true, PSH: true, Window: 512, Payload: marker}
		}
		cases := []struct {
			name string
			in   *Injector
			s    Segment
			drop string
		}{
			{"the primary's address from another MAC", fromPri,
				seg(pri, client, net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}), "server_mac_mismatch"},
			{"the backup's address from the primary's MAC", fromPri, seg(bak, client, nil), "server_mac_mismatch"},
			{"the primary to a client port of no connection", fromPri,
				seg(pri, netip.AddrPortFrom(clientIP, port+1), nil), "no_flow"},
			// The VIP lives on no interface: from the LAN it is a fake the
			// host would route to the client, were it not dropped.
			{"the VIP's address from the LAN", fromPri, seg(vipPort, client, nil), "spoofed_vip"},
			// The backup itself: its stream is never the client's while the
			// primary lives, whatever it sends.
			{"the backup, not the live leg", fromBak, seg(bak, client, nil), ""},
		}
		for _, c := range cases {
			f := c.in.Frame(c.s)
			for range reps {
				if err := c.in.Send(f); err != nil {
					t.Fatal(err)
				}
				time.Sleep(200 * time.Microsecond)
			}
		}
		checkDownload(t, b, run)
		after := gatewayStatus(t, b)
		want := map[string]uint64{}
		for _, c := range cases {
			if c.drop != "" {
				want[c.drop] += reps
			}
		}
		// Frames lost on a full ring (a loaded host) never reach the count.
		lost := after.KernelBypass.RingDrops - before.KernelBypass.RingDrops
		for reason, n := range want {
			// The probe of the stray's client draws a reset from it, which
			// has no connection either: no_flow counts that too.
			if got := after.Drops[reason] - before.Drops[reason]; got > n && reason != "no_flow" || got+lost < n {
				t.Errorf("drops %q: %d more, want %d", reason, got, n)
			}
		}
		for _, p := range capture.Stop() {
			if tcp := TCP(p); tcp != nil && bytes.Contains(tcp.Payload, marker) {
				t.Errorf("a spoofed reply reached the client: %s", summary(p))
			}
		}
	})

	t.Run("control socket is root's only", func(t *testing.T) {
		st, err := os.Stat(b.ControlSocket())
		if err != nil {
			t.Fatal(err)
		}
		if perm := st.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("control socket mode %v: group or others may connect", perm)
		}
		// The state directory must let nobody reach the socket, so that it
		// is the socket itself that refuses.
		if err := os.Chmod(filepath.Dir(b.ControlSocket()), 0o755); err != nil {
			t.Fatal(err)
		}
		// understudy status as nobody: its connect must fail with EACCES,
		// which the command names.
		cmd := exec.Command(binary(t, b.Root, "understudy"), "status", "--control", b.ControlSocket())
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "permission denied") {
			t.Errorf("understudy status as nobody: %v: %s; want EACCES (permission denied)", err, out)
		}
		t.Logf("as nobody: %s", bytes.TrimSpace(out))
		if _, err := b.StatusJSON(); err != nil {
			t.Errorf("root's status: %v", err)
		}
	})
}

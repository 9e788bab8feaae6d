package testbed

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
)

// restartBound is how soon after the gateway is back the client of a
// connection it no longer knows must have its reset: one or two of the
// server's retransmissions, never the client's own timeouts.
const restartBound = 15 * time.Second

// TestGatewayRestart: kill -9 of the gateway in the middle of a download,
// then a new gateway. The download's connection, which the new gateway does
// not know, ends with a reset the client sees promptly (curl fails, it does
// not hang); a client that connects again is served whole; the dead
// gateway's kernel-bypass tables and control socket are replaced, not
// doubled.
func TestGatewayRestart(t *testing.T) {
	b := Up(t, Options{})
	RequireTool(t, "tcpdump")
	RequireTool(t, "nft")
	gw := b.StartGateway(hostileArgs...)
	const port = 45301
	capture := b.StartTcpdump(b.Client(), "eth0", "tcp[tcpflags] & tcp-rst != 0")
	run := b.Background(func() (*Transfer, error) {
		return b.Download("/big.bin", "--limit-rate", "8M", "--local-port", strconv.Itoa(port), "--max-time", "60")
	})
	time.Sleep(2 * time.Second)
	if run.Done() {
		t.Fatal("the download ended before the gateway was killed")
	}
	gw.Kill()
	if _, err := os.Stat(b.ControlSocket()); err != nil {
		t.Fatalf("the killed gateway left no control socket to replace: %v", err)
	}
	if n := b.bypassTables(); n != 2 {
		t.Fatalf("the killed gateway left %d understudy nftables tables, want its 2", n)
	}

	b.RestartGateway(hostileArgs...)
	restarted := time.Now()
	tr, err := run.Wait()
	ended := time.Since(restarted)
	switch {
	case err == nil:
		t.Fatalf("the download completed (%d bytes) across a gateway that forgot it", tr.Bytes)
	case !strings.Contains(tr.Stderr, "reset"):
		// What the new gateway did with the connection it did not know.
		raw, serr := b.StatusJSON()
		t.Fatalf("the download failed without a reset: %v\nnew gateway's status (%v):\n%s", err, serr, raw)
	case ended > restartBound:
		t.Fatalf("the client learned of its connection's end %v after the restart, bound %v", ended, restartBound)
	}
	t.Logf("download after %d of %d bytes: %q, %v after the restart", tr.Bytes, 64<<20, tr.Stderr, ended.Round(time.Millisecond))
	rsts := capture.Stop().ClientRSTs().Filter(func(p gopacket.Packet) bool {
		tcp := TCP(p)
		return tcp != nil && tcp.DstPort == port
	})
	if len(rsts) == 0 {
		t.Error("the client's capture holds no reset of the download's connection")
	}

	// A client that connects again is served.
	tr, err = b.Download("/big.bin", "--limit-rate", "64M")
	if err != nil {
		t.Fatalf("download after the restart: %v", err)
	}
	if tr.SHA256 != b.SHA256("big.bin") || tr.NumConnects != 1 {
		t.Fatalf("big.bin after the restart: %d bytes sha256 %s over %d connections", tr.Bytes, tr.SHA256, tr.NumConnects)
	}
	if n := b.bypassTables(); n != 2 {
		t.Errorf("%d understudy nftables tables after the restart, want 2: the stale ones replaced", n)
	}
	st := gatewayStatus(t, b)
	if !st.KernelBypass.Installed || st.KernelBypass.Error != "" {
		t.Errorf("kernel bypass after the restart: %+v", st.KernelBypass)
	}
	t.Logf("after the restart: %d unknown-connection resets, %d client probes",
		st.Packets.Events["unknown_resets"], st.Packets.Events["unknown_probes"])
}

// bypassTables counts the gateway's nftables tables in the gateway namespace.
func (b *Bed) bypassTables() int {
	b.t.Helper()
	n := 0
	for _, l := range strings.Split(nftTables(b.t, b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "table" && strings.HasPrefix(f[2], "understudy") {
			n++
		}
	}
	return n
}

// TestStaleServerConnection: a client reuses the port of a connection both
// servers still hold but the gateway does not know (it was restarted, and
// the client's end was reset). The servers answer the new SYN with an ACK of
// the old connection; the gateway resets that connection as the client's
// kernel would and sends the SYN again, so the client connects at once, with
// both servers, instead of retrying its SYN until it gives up.
func TestStaleServerConnection(t *testing.T) {
	b := Up(t, Options{})
	gw := b.StartGateway(hostileArgs...)
	const port = 45302
	old, err := b.dialFrom(port, 5*time.Second)
	if err != nil {
		t.Fatalf("first connection: %v", err)
	}
	b.getIndex(t, old)
	// Killed while it still held the client's ACK of the reply (its ACK
	// hold), the gateway would leave a server retransmitting, and the new
	// one answers a segment of a connection it does not know with a reset.
	b.waitAcked(t, port)
	gw.Kill()
	b.RestartGateway(hostileArgs...)
	old.SetLinger(0) // the client's end goes at once, with no TIME_WAIT to hold the port
	old.Close()
	for _, s := range []Server{Pri, Bak} {
		out, err := b.Output(b.NS(s), "ss", "-Htn", "state", "established", fmt.Sprintf("( sport = :80 and dport = :%d )", port))
		if err != nil || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 || len(strings.TrimSpace(string(out))) == 0 {
			t.Fatalf("%s should still hold the old connection (err %v):\n%s", s, err, out)
		}
	}

	took := b.reconnect(t, port)
	st := gatewayStatus(t, b)
	if n := st.Packets.Events["stale_conns_reset"]; n != 2 {
		t.Errorf("stale_conns_reset %d, want 2: one per server", n)
	}
	if st.Flows.Protected != 1 {
		t.Errorf("%d protected flows, want the new connection's, with both servers", st.Flows.Protected)
	}
	t.Logf("connected again in %v, with both servers", took.Round(time.Microsecond))
}

// TestClientLostConnection: a client loses a keep-alive connection without
// a word to the gateway (its reset is dropped on the way, as when its host
// restarted or a NAT gave its port to another) and connects again from the
// same port. Its SYN draws the gateway's challenge ACK, its kernel answers
// with a reset that ends the old flow on both servers, and sends its SYN
// again within milliseconds (Linux re-arms its SYN timer at the minimum on
// such an ACK), which is served: before, every SYN of the port was dropped
// until the flow idled out (10 minutes).
func TestClientLostConnection(t *testing.T) {
	b := Up(t, Options{})
	RequireTool(t, "iptables")
	b.StartGateway(hostileArgs...)
	const port = 45303
	old, err := b.dialFrom(port, 5*time.Second)
	if err != nil {
		t.Fatalf("first connection: %v", err)
	}
	b.getIndex(t, old)
	rule := []string{"OUTPUT", "-p", "tcp", "--sport", fmt.Sprint(port), "--tcp-flags", "RST", "RST", "-j", "DROP"}
	if err := b.Run(b.Client(), "iptables", append([]string{"-A"}, rule...)...); err != nil {
		t.Fatal(err)
	}
	old.SetLinger(0)
	old.Close()
	if err := b.Run(b.Client(), "iptables", append([]string{"-D"}, rule...)...); err != nil {
		t.Fatal(err)
	}
	if st := gatewayStatus(t, b); st.Flows.ByState["established"] != 1 {
		t.Fatalf("the gateway should still hold the lost connection: %v", st.Flows.ByState)
	}

	took := b.reconnect(t, port)
	st := gatewayStatus(t, b)
	if st.Packets.Events["challenge_acks"] == 0 || st.Flows.Protected != 1 {
		t.Errorf("challenge_acks %d, %d protected flows; want at least 1, and 1", st.Packets.Events["challenge_acks"], st.Flows.Protected)
	}
	t.Logf("connected again in %v, with both servers", took.Round(time.Millisecond))
}

// reconnect connects again from port, where the gateway or the servers hold
// an older connection, and requests /index.html on it. The connection must
// come before the client's own SYN timeout (1 s): the first SYN, or the one
// its kernel sends at once after a challenge ACK, is answered. It returns how
// long connecting took.
func (b *Bed) reconnect(t *testing.T, port int) time.Duration {
	t.Helper()
	start := time.Now()
	c, err := b.dialFrom(port, 5*time.Second)
	took := time.Since(start)
	if err != nil {
		raw, _ := b.StatusJSON()
		t.Fatalf("connecting again from port %d: %v after %v\ngateway status:\n%s", port, err, took.Round(time.Millisecond), raw)
	}
	defer c.Close()
	if took > 900*time.Millisecond {
		t.Errorf("connecting again took %v: a SYN waited for the client's timeout", took.Round(time.Millisecond))
	}
	b.getIndex(t, c)
	return took
}

// dialFrom connects to the VIP from the client namespace, from port.
func (b *Bed) dialFrom(port int, timeout time.Duration) (*net.TCPConn, error) {
	var c net.Conn
	err := inNS(b.Client(), func() (err error) {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{Port: port}}
		c, err = d.Dial("tcp", net.JoinHostPort(VIP, "80"))
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// waitAcked waits until both servers' connections from the client's port
// have nothing unacknowledged (ss's Send-Q is 0).
func (b *Bed) waitAcked(t *testing.T, port int) {
	t.Helper()
	for _, s := range []Server{Pri, Bak} {
		var out string
		for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			var err error
			out, err = b.Output(b.NS(s), "ss", "-Htn", "state", "established", fmt.Sprintf("( sport = :80 and dport = :%d )", port))
			// With a state filter ss leaves out the state: Recv-Q Send-Q ...
			if f := strings.Fields(out); err == nil && len(f) >= 2 && f[1] == "0" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s's connection from port %d still has unacknowledged data after 3 s (err %v):\n%s", s, port, err, out)
			}
		}
	}
}

// getIndex requests /index.html on c and checks the answer whole.
func (b *Bed) getIndex(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r, err := get(c, bufio.NewReader(c), "/index.html", sha256.New())
	if err != nil || r.status != http.StatusOK || r.sum != b.SHA256("index.html") {
		t.Fatalf("GET /index.html: %+v, %v", r, err)
	}
}

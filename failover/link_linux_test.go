package failover

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Root tests run their body in a child test process started with
// `ip netns exec` in a fresh namespace, so that the links they make and
// break touch nothing on the host.

const netnsEnv = "FAILOVER_TEST_NETNS"

var netnsSeq atomic.Int32

func inNetns(t *testing.T, body func(t *testing.T)) {
	if name := os.Getenv(netnsEnv); name != "" {
		if name != t.Name() {
			t.Skipf("helper process for %s", name)
		}
		body(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace and a veth pair")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command (iproute2)")
	}
	ns := fmt.Sprintf("fo-%d-%d", os.Getpid(), netnsSeq.Add(1))
	mustRun(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0],
		"-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v", "-test.timeout=60s")
	cmd.Env = append(os.Environ(), netnsEnv+"="+t.Name())
	out, err := cmd.CombinedOutput()
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		t.Log(line)
	}
	if err != nil {
		t.Fatalf("test body in namespace %s: %v", ns, err)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("test body in namespace %s did not pass", ns)
	}
}

func mustRun(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func TestLinkWatcherCarrier(t *testing.T) {
	inNetns(t, func(t *testing.T) {
		mustRun(t, "ip", "link", "add", "fo-a", "type", "veth", "peer", "name", "fo-b")
		mustRun(t, "ip", "link", "set", "fo-a", "up")
		mustRun(t, "ip", "link", "set", "fo-b", "up")

		events := make(chan LinkEvent, 16)
		w := &LinkWatcher{Iface: "fo-a", OnChange: func(e LinkEvent) { events <- e }}
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- w.Run(ctx) }()
		defer func() {
			cancel()
			if err := <-errc; err != nil {
				t.Errorf("Run: %v", err)
			}
		}()

		expect := func(carrier bool, within time.Duration) LinkEvent {
			t.Helper()
			select {
			case e := <-events:
				if e.Carrier != carrier || e.Iface != "fo-a" {
					t.Fatalf("event %+v, want carrier %v", e, carrier)
				}
				return e
			case <-time.After(within):
				t.Fatalf("no carrier=%v event within %v", carrier, within)
			}
			panic("unreachable")
		}
		// The state at start. A fresh veth may take a moment to raise its
		// carrier: accept a first down event before it.
		if e := <-events; !e.Carrier {
			expect(true, time.Second)
		}

		start := time.Now()
		mustRun(t, "ip", "link", "set", "fo-b", "down")
		e := expect(false, time.Second)
		t.Logf("carrier lost after %v: %s", time.Since(start), e.Cause())
		if e.State != "lower-layer-down" || e.Cause() != "carrier lost on fo-a (lower-layer-down)" {
			t.Fatalf("event %+v cause %q", e, e.Cause())
		}

		start = time.Now()
		mustRun(t, "ip", "link", "set", "fo-b", "up")
		e = expect(true, time.Second)
		t.Logf("carrier back after %v: %s", time.Since(start), e.Cause())

		// Our own side set down counts as carrier loss too.
		mustRun(t, "ip", "link", "set", "fo-a", "down")
		expect(false, time.Second)
		mustRun(t, "ip", "link", "set", "fo-a", "up")
		expect(true, time.Second)

		// Deleting the pair removes the interface: carrier lost, once.
		mustRun(t, "ip", "link", "del", "fo-b")
		e = expect(false, time.Second)
		if e.State != "absent" && e.State != "lower-layer-down" && e.State != "down" {
			t.Fatalf("after delete: %+v", e)
		}
		select {
		case e := <-events:
			t.Fatalf("duplicate event %+v", e)
		case <-time.After(100 * time.Millisecond):
		}
	})
}

func TestLinkWatcherMissingInterface(t *testing.T) {
	w := &LinkWatcher{Iface: "fo-nonexistent", OnChange: func(LinkEvent) {}}
	err := w.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "watch link fo-nonexistent") {
		t.Fatalf("Run on a missing interface: %v", err)
	}
}

// Carrier loss on the server-side interface takes both servers down at
// once; when it returns, probes raise them after Rise.
func TestMonitorLinkDown(t *testing.T) {
	inNetns(t, func(t *testing.T) {
		mustRun(t, "ip", "link", "set", "lo", "up")
		mustRun(t, "ip", "link", "add", "fo-a", "type", "veth", "peer", "name", "fo-b")
		mustRun(t, "ip", "link", "set", "fo-a", "up")
		mustRun(t, "ip", "link", "set", "fo-b", "up")
		primary, _ := acceptor(t, "127.0.0.1:0")
		backup, _ := acceptor(t, "127.0.0.1:0")
		m, err := NewMonitor(MonitorConfig{
			Config:  Config{Interval: 5 * time.Millisecond, Misses: 3, Rise: 3},
			Servers: [2]netip.AddrPort{primary, backup},
			Iface:   "fo-a",
			Log:     quiet,
		})
		if err != nil {
			t.Fatal(err)
		}
		startMonitor(t, m)
		got := map[int]Transition{}
		collect := func(to Health) {
			t.Helper()
			clear(got)
			deadline := time.After(2 * time.Second)
			for len(got) < 2 {
				select {
				case tr := <-m.Events():
					if tr.To != to {
						t.Fatalf("transition %v, want to %v", tr, to)
					}
					if h, _ := m.Health(1 - tr.Server); to == Down && len(got) == 0 && h != Down {
						// The datapath takes the standby's failure first
						// by asking Health when the active's comes.
						t.Fatalf("the first transition of the carrier loss, %v, came while the other server was %v", tr, h)
					}
					got[tr.Server] = tr
				case <-deadline:
					t.Fatalf("transitions to %v: got %v; snapshot %+v", to, got, m.Snapshot())
				}
			}
		}
		collect(Up)

		start := time.Now()
		mustRun(t, "ip", "link", "set", "fo-b", "down")
		collect(Down)
		for _, tr := range got {
			if tr.Cause != "carrier lost on fo-a (lower-layer-down)" || tr.DetectionLatency() != 0 {
				t.Fatalf("link down transition %v", tr)
			}
			if took := tr.At.Sub(start); took > time.Second {
				t.Fatalf("down %v after carrier loss", took)
			}
		}
		snap := m.Snapshot()
		if snap.Link == nil || !snap.Link.Known || snap.Link.Carrier || snap.Link.Changes != 1 {
			t.Fatalf("link status %+v", snap.Link)
		}
		// Loopback probes still succeed, but not while the carrier is down.
		time.Sleep(50 * time.Millisecond)
		if st := m.Snapshot().Servers[Primary]; st.Health != Down || !st.LinkDown {
			t.Fatalf("primary rose while the carrier was down: %+v", st)
		}

		mustRun(t, "ip", "link", "set", "fo-b", "up")
		collect(Up)
		if l := m.Snapshot().Link; !l.Carrier || l.Changes != 2 {
			t.Fatalf("link status %+v", l)
		}
	})
}

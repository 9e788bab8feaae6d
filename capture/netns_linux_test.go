package capture

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// Root tests run their body in a child test process started with
// `ip netns exec` in namespace A of a fresh pair of namespaces joined by a
// veth pair, so that every socket, netlink handle and nftables table of the
// body lives in that namespace, whatever thread it runs on.

const helperEnv = "CAPTURE_TEST_NETNS"

// testNet is the topology: A (10.77.0.1, ifA) <-veth-> B (10.77.0.2, ifB).
type testNet struct {
	NSA, NSB   string
	IfA, IfB   string
	IPA, IPB   [4]byte
	MACA, MACB [6]byte
}

var nsSeq atomic.Int32

// inNetns runs body in namespace A of a new topology. Without root it skips.
func inNetns(t *testing.T, body func(t *testing.T, tn testNet)) {
	if env := os.Getenv(helperEnv); env != "" {
		var h struct {
			Test string
			Net  testNet
		}
		if err := json.Unmarshal([]byte(env), &h); err != nil {
			t.Fatalf("bad %s: %v", helperEnv, err)
		}
		if h.Test != t.Name() {
			t.Skipf("helper process for %s", h.Test)
		}
		body(t, h.Net)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, packet sockets and nftables tables")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command (iproute2)")
	}
	n := nsSeq.Add(1)
	tn := testNet{
		NSA:  fmt.Sprintf("capt-%d-%d-a", os.Getpid(), n),
		NSB:  fmt.Sprintf("capt-%d-%d-b", os.Getpid(), n),
		IfA:  fmt.Sprintf("ca%d-%da", os.Getpid()%100000, n),
		IfB:  fmt.Sprintf("ca%d-%db", os.Getpid()%100000, n),
		IPA:  [4]byte{10, 77, 0, 1},
		IPB:  [4]byte{10, 77, 0, 2},
		MACA: [6]byte(testMACA),
		MACB: [6]byte(testMACB),
	}
	run(t, "ip", "netns", "add", tn.NSA)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", tn.NSA).Run() })
	run(t, "ip", "netns", "add", tn.NSB)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", tn.NSB).Run() })
	run(t, "ip", "link", "add", tn.IfA, "netns", tn.NSA, "address", mac(tn.MACA),
		"type", "veth", "peer", "name", tn.IfB, "netns", tn.NSB, "address", mac(tn.MACB))
	for _, s := range []struct {
		ns, ifname string
		ip         [4]byte
	}{{tn.NSA, tn.IfA, tn.IPA}, {tn.NSB, tn.IfB, tn.IPB}} {
		run(t, "ip", "-n", s.ns, "addr", "add", ip(s.ip)+"/24", "dev", s.ifname)
		run(t, "ip", "-n", s.ns, "link", "set", "lo", "up")
		run(t, "ip", "-n", s.ns, "link", "set", s.ifname, "up")
	}
	env, _ := json.Marshal(struct {
		Test string
		Net  testNet
	}{t.Name(), tn})
	cmd := exec.Command("ip", "netns", "exec", tn.NSA, os.Args[0],
		"-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v", "-test.timeout=120s")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(env))
	out, err := cmd.CombinedOutput()
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		t.Log(line)
	}
	if err != nil {
		t.Fatalf("test body in namespace %s: %v", tn.NSA, err)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("test body in namespace %s did not pass", tn.NSA)
	}
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// inNS runs fn on a thread switched into the named namespace. Sockets fn
// opens stay in that namespace after it returns.
func inNS(t testing.TB, name string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("netns.Get: %v", err)
	}
	defer orig.Close()
	h, err := netns.GetFromName(name)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("netns %s: %v", name, err)
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("netns.Set %s: %v", name, err)
	}
	fn()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: the runtime discards it when this
		// goroutine ends rather than reuse it in the wrong namespace.
		t.Fatalf("netns.Set back: %v", err)
	}
	runtime.UnlockOSThread()
}

func ip(a [4]byte) string { return net.IP(a[:]).String() }

func mac(m [6]byte) string { return net.HardwareAddr(m[:]).String() }

// waitFrames collects frames from r until want frames arrived or d passed,
// then keeps listening for settle to catch unexpected extras.
func waitFrames(t testing.TB, r *Ring, want int, d, settle time.Duration) []Frame {
	t.Helper()
	var got []Frame
	deadline := time.Now().Add(d)
	for {
		for {
			f, ok := r.Next()
			if !ok {
				break
			}
			f.Data = append([]byte(nil), f.Data...)
			got = append(got, f)
			r.Release()
		}
		if len(got) >= want {
			if settle <= 0 {
				return got
			}
			deadline = time.Now().Add(settle)
			settle = 0
			want = int(^uint(0) >> 1)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return got
		}
		if err := Wait([]*Ring{r}, min(left, 50*time.Millisecond)); err != nil {
			t.Fatalf("Wait: %v", err)
		}
	}
}

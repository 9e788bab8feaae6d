package capture

import (
	"bytes"
	"context"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

func neighStatsOf(n *Neighbors) (neighStats, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stats, n.useErr
}

func waitLookup(t *testing.T, n *Neighbors, ip [4]byte, want func([6]byte, bool) bool, d time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if want(n.Lookup(ip)) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// startNeighbors starts the cache for ifname; it stops when the test ends.
func startNeighbors(t *testing.T, ifname string) *Neighbors {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	n, err := NewNeighbors(ctx, ifname)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

func TestNeighbors(t *testing.T) {
	inNetns(t, func(t *testing.T, tn testNet) {
		run(t, "ip", "neigh", "flush", "dev", tn.IfA)
		n := startNeighbors(t, tn.IfA)

		// Absent from the kernel's table: resolution must be triggered.
		if _, ok := n.Lookup(tn.IPB); ok {
			t.Fatal("Lookup hit before any resolution")
		}
		got, err := n.Resolve(context.Background(), tn.IPB, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got != tn.MACB {
			t.Fatalf("Resolve = %x, want %x", got, tn.MACB)
		}
		st, useErr := neighStatsOf(n)
		t.Logf("stats %+v, NTF_USE error %v", st, useErr)
		if st.Triggers == 0 || useErr != nil || st.Fallbacks != 0 {
			t.Errorf("resolution not triggered through NTF_USE: %+v, %v", st, useErr)
		}
		if out := run(t, "ip", "neigh", "show", "dev", tn.IfA); !strings.Contains(out, ip(tn.IPB)+" lladdr "+mac(got)) {
			t.Errorf("kernel neighbour table lacks the resolved entry:\n%s", out)
		}

		// Zero-alloc hot path, hit and miss.
		if a := testing.AllocsPerRun(1000, func() {
			if _, ok := n.Lookup(tn.IPB); !ok {
				t.Fatal("miss")
			}
		}); a != 0 {
			t.Errorf("Lookup hit: %v allocs/op", a)
		}
		if a := testing.AllocsPerRun(1000, func() { n.Lookup([4]byte{10, 77, 0, 99}) }); a != 0 {
			t.Errorf("Lookup miss: %v allocs/op", a)
		}

		// A destination behind a gateway maps to the gateway's MAC.
		run(t, "ip", "route", "add", "10.88.0.0/24", "via", ip(tn.IPB))
		if got, err := n.Resolve(context.Background(), [4]byte{10, 88, 0, 5}, 3*time.Second); err != nil || got != tn.MACB {
			t.Errorf("Resolve via gateway = %x, %v; want %x", got, err, tn.MACB)
		}

		// The kernel's changes reach the cache: a new MAC...
		newMAC := [6]byte{0x02, 0x77, 0, 0, 0, 0x99}
		run(t, "ip", "neigh", "replace", ip(tn.IPB), "lladdr", mac(got), "dev", tn.IfA, "nud", "permanent")
		run(t, "ip", "neigh", "replace", ip(tn.IPB), "lladdr", mac(newMAC), "dev", tn.IfA, "nud", "permanent")
		if !waitLookup(t, n, [4]byte{10, 88, 0, 5}, func(m [6]byte, ok bool) bool { return ok && m == newMAC }, 2*time.Second) {
			t.Error("MAC change not seen through the gateway route")
		}
		// ...a removed entry (checked without Lookup, which would re-resolve)...
		run(t, "ip", "neigh", "del", ip(tn.IPB), "dev", tn.IfA)
		deadline := time.Now().Add(2 * time.Second)
		for n.snap.Load().hops.get(tn.IPB) != nil && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n.snap.Load().hops.get(tn.IPB) != nil {
			t.Error("deleted neighbour still cached")
		}
		// ...and a miss resolves again in the background.
		if !waitLookup(t, n, tn.IPB, func(m [6]byte, ok bool) bool { return ok && m == tn.MACB }, 3*time.Second) {
			t.Error("Lookup did not re-resolve after the entry was deleted")
		}
		// A failed resolution is dropped, not cached.
		if _, err := n.Resolve(context.Background(), [4]byte{10, 77, 0, 98}, 500*time.Millisecond); err == nil {
			t.Error("Resolve of an absent host succeeded")
		}

		// A destination that does not leave via the interface is an error.
		_, err = n.Resolve(context.Background(), [4]byte{127, 0, 0, 1}, 300*time.Millisecond)
		if err == nil || !strings.Contains(err.Error(), "leaves via lo") {
			t.Errorf("Resolve(127.0.0.1) = %v, want a route error", err)
		}
		n.Close()
		if _, err := n.Resolve(context.Background(), tn.IPB, time.Second); err != nil {
			// Cached entries still answer after Close.
			t.Errorf("Resolve after Close: %v", err)
		}
	})
}

func TestNeighborsUDPFallback(t *testing.T) {
	inNetns(t, func(t *testing.T, tn testNet) {
		run(t, "ip", "neigh", "flush", "dev", tn.IfA)
		if err := udpPoke(tn.IfA, tn.IPB); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			if out := run(t, "ip", "neigh", "show", ip(tn.IPB), "dev", tn.IfA); strings.Contains(out, mac(tn.MACB)) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Error("UDP poke did not make the kernel resolve the neighbour")
	})
}

// A next hop the gateway keeps using is re-confirmed when the kernel marks
// it stale (the kernel sees none of the gateway's packet-socket traffic, so
// it would otherwise let the entry age out).
func TestNeighborsRefreshStale(t *testing.T) {
	inNetns(t, func(t *testing.T, tn testNet) {
		run(t, "sysctl", "-qw", "net.ipv4.neigh."+tn.IfA+".delay_first_probe_time=1")
		n := startNeighbors(t, tn.IfA)
		mon := exec.Command("ip", "monitor", "neigh")
		var buf bytes.Buffer
		mon.Stdout = &buf
		if err := mon.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			mon.Process.Kill()
			mon.Wait()
			t.Logf("ip monitor neigh:\n%s", buf.String())
		}()
		if _, err := n.Resolve(context.Background(), tn.IPB, 3*time.Second); err != nil {
			t.Fatal(err)
		}
		run(t, "ip", "neigh", "change", ip(tn.IPB), "lladdr", mac(tn.MACB), "dev", tn.IfA, "nud", "stale")
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if _, ok := n.Lookup(tn.IPB); !ok {
				t.Fatal("stale entry in use dropped from the cache")
			}
			out := run(t, "ip", "neigh", "show", ip(tn.IPB), "dev", tn.IfA)
			if st, _ := neighStatsOf(n); st.Refreshes > 0 && strings.Contains(out, "REACHABLE") {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		st, useErr := neighStatsOf(n)
		t.Errorf("stale entry in use not re-confirmed: stats %+v (%v); kernel: %s", st, useErr,
			run(t, "ip", "neigh", "show", "dev", tn.IfA))
	})
}

// TestNeighborsManyDestinations: the worker learns thousands of new
// destinations (clients, or a spoofed-SYN flood's sources: the datapath
// looks every SYN's source up) at a bounded cost each.
func TestNeighborsManyDestinations(t *testing.T) {
	inNetns(t, func(t *testing.T, tn testNet) {
		run(t, "ip", "route", "add", "default", "via", ip(tn.IPB), "dev", tn.IfA)
		n := startNeighbors(t, tn.IfA)
		const N = 6000
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		start := time.Now()
		for i := range N {
			n.missCh <- [4]byte{198, 18, byte(i >> 8), byte(i)}
		}
		for n.snap.Load().routes.len() < N && time.Since(start) < 60*time.Second {
			time.Sleep(10 * time.Millisecond)
		}
		runtime.ReadMemStats(&after)
		perDst := (after.TotalAlloc - before.TotalAlloc) / N
		t.Logf("%d destinations learned in %v, %d bytes allocated each", n.snap.Load().routes.len(), time.Since(start), perDst)
		if got := n.snap.Load().routes.len(); got != N {
			t.Fatalf("%d destinations learned, want %d", got, N)
		}
		if perDst > 16<<10 {
			t.Errorf("%d bytes allocated per new destination", perDst)
		}
	})
}

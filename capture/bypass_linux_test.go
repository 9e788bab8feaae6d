package capture

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func nftRuleset(t *testing.T) string {
	t.Helper()
	return run(t, "nft", "list", "ruleset")
}

// dialFrom dials addr from namespace ns and reports the outcome.
func dialFrom(t *testing.T, ns, addr string, timeout time.Duration) error {
	t.Helper()
	var err error
	inNS(t, ns, func() {
		var c net.Conn
		c, err = net.DialTimeout("tcp", addr, timeout)
		if err == nil {
			c.Close()
		}
	})
	return err
}

func TestBypass(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil && os.Getenv(helperEnv) == "" {
		t.Skip("needs the nft command")
	}
	inNetns(t, func(t *testing.T, tn testNet) {
		// Leftovers of a crashed run.
		run(t, "nft", "add table netdev understudy; add chain netdev understudy stale_chain; add table inet understudy_watch; add chain inet understudy_watch stale_watch")
		if present, err := BypassPresent(); err != nil || !present {
			t.Fatalf("BypassPresent with stale tables: %v %v", present, err)
		}

		r := openRing(t, tn.IfA, tn.IPA, 80, RingConfig{})
		other := [4]byte{10, 77, 0, 50}
		cfg := BypassConfig{
			ClientIface: tn.IfA, ServerIface: tn.IfA,
			VIPs: [][4]byte{tn.IPA}, Servers: [][4]byte{tn.IPB}, Exclude: [][4]byte{tn.IPA},
			Ports: []uint16{80, 8080},
		}
		b, err := InstallBypass(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Remove() })
		rs := nftRuleset(t)
		for _, want := range []string{"table netdev understudy", "chain client_ingress", "chain server_ingress",
			`hook ingress device "` + tn.IfA + `" priority -500`, "table inet understudy_watch", "hook forward priority -500",
			"ip daddr 10.77.0.1 tcp dport 80 counter packets 0 bytes 0 drop",
			"ip saddr 10.77.0.2 ip daddr != 10.77.0.1 tcp sport 8080 counter packets 0 bytes 0 drop",
			"ip saddr 10.77.0.1 counter packets 0 bytes 0 drop"} {
			if !strings.Contains(rs, want) {
				t.Errorf("ruleset lacks %q", want)
			}
		}
		if strings.Contains(rs, "stale") {
			t.Errorf("stale chains survived:\n%s", rs)
		}
		if t.Failed() {
			t.Fatalf("ruleset:\n%s", rs)
		}

		// Handled client traffic is dropped by the host but still captured.
		err = dialFrom(t, tn.NSB, net.JoinHostPort(ip(tn.IPA), "80"), 300*time.Millisecond)
		if err == nil || errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial of a handled VIP port: %v, want a timeout (SYN dropped, no RST)", err)
		}
		if got := waitFrames(t, r, 1, time.Second, 0); len(got) == 0 {
			t.Error("ring did not capture the SYN the bypass dropped")
		}
		// Other traffic reaches the host: port 81 is refused by its RST.
		if err := dialFrom(t, tn.NSB, net.JoinHostPort(ip(tn.IPA), "81"), time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial of an unhandled port: %v, want connection refused", err)
		}

		// Server traffic to the gateway's own address is not dropped: a probe
		// from A to a listener on B works.
		var ln net.Listener
		inNS(t, tn.NSB, func() { ln, err = net.Listen("tcp", net.JoinHostPort(ip(tn.IPB), "8080")) })
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		c, err := net.DialTimeout("tcp", net.JoinHostPort(ip(tn.IPB), "8080"), time.Second)
		if err != nil {
			t.Errorf("probe from the gateway address to a server: %v", err)
		} else {
			c.Close()
		}
		// Server traffic to anyone else is dropped.
		s := openSenderIn(t, tn.NSB, tn.IfB)
		for i := 0; i < 3; i++ {
			send(t, s, buildFrame(t, frameSpec{src: tn.IPB, dst: other, sport: 8080, dport: uint16(5000 + i)}))
		}
		send(t, s, buildFrame(t, frameSpec{src: tn.IPB, dst: other, sport: 8081, dport: 5000}))
		// Frames posing as the VIP from the servers' side are dropped and
		// counted apart, whatever their port.
		send(t, s, buildFrame(t, frameSpec{src: tn.IPA, dst: other, sport: 80, dport: 5000}))
		send(t, s, buildFrame(t, frameSpec{src: tn.IPA, dst: other, sport: 22, dport: 5000}))
		// A frame of VLAN 10 is left to that VLAN's interface.
		f := buildFrame(t, frameSpec{src: tn.IPB, dst: other, sport: 8080, dport: 5009})
		send(t, s, append(append(append([]byte{}, f[:12]...), 0x81, 0x00, 0x00, 0x0a), f[12:]...))
		time.Sleep(100 * time.Millisecond)
		ctr, err := b.Counters()
		if err != nil {
			t.Fatal(err)
		}
		if ctr.ClientDropped < 1 || ctr.ServerDropped != 3 || ctr.KernelForwarded != 0 || ctr.SpoofedVIP != 2 {
			t.Errorf("Counters = %+v, want ClientDropped >= 1, ServerDropped 3, KernelForwarded 0, SpoofedVIP 2", ctr)
		}

		// The watch chain counts handled traffic the kernel forwards: install
		// again (replacing our own tables) without the server ingress chain.
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0); err != nil {
			t.Fatal(err)
		}
		cfg.ServerIface = ""
		b2, err := InstallBypass(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if in, err := b2.Installed(); err != nil || !in {
			t.Errorf("Installed after install: %v %v", in, err)
		}
		if rs := nftRuleset(t); strings.Contains(rs, "server_ingress") || strings.Count(rs, "table netdev understudy") != 1 {
			t.Errorf("reinstall did not replace the tables:\n%s", rs)
		}
		send(t, s, buildFrame(t, frameSpec{src: tn.IPB, dst: other, sport: 8080, dport: 6000}))
		send(t, s, buildFrame(t, frameSpec{src: tn.IPB, dst: other, sport: 8081, dport: 6000}))
		time.Sleep(100 * time.Millisecond)
		if ctr, err := b2.Counters(); err != nil || ctr.KernelForwarded != 1 || ctr.ServerDropped != 0 {
			t.Errorf("Counters = %+v, %v; want KernelForwarded 1", ctr, err)
		}

		if err := b2.Remove(); err != nil {
			t.Fatal(err)
		}
		if err := b.Remove(); err != nil {
			t.Errorf("second Remove: %v", err)
		}
		if rs := nftRuleset(t); strings.Contains(rs, "understudy") {
			t.Errorf("tables left after Remove:\n%s", rs)
		}
		if present, err := BypassPresent(); err != nil || present {
			t.Errorf("BypassPresent after Remove: %v %v", present, err)
		}
		if in, err := b2.Installed(); err != nil || in {
			t.Errorf("Installed after Remove: %v %v", in, err)
		}
	})
}

func TestBypassErrors(t *testing.T) {
	if _, err := InstallBypass(BypassConfig{ClientIface: "x", VIPs: [][4]byte{{1, 2, 3, 4}}}); err == nil {
		t.Error("InstallBypass without ports succeeded")
	}
	if _, err := InstallBypass(BypassConfig{ClientIface: "x", Ports: []uint16{80}}); err == nil {
		t.Error("InstallBypass of a client interface without VIPs succeeded")
	}
}

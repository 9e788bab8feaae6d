package capture

import (
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestDisableOffloads(t *testing.T) {
	inNetns(t, func(t *testing.T, tn testNet) {
		// veth has GRO off by default: turn it on so there is something to undo.
		run(t, "ethtool", "-K", tn.IfA, "gro", "on")
		changed, err := DisableOffloads(tn.IfA)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("changed: %v", changed)
		for _, f := range []string{"rx-gro", "tx-tcp-segmentation", "tx-generic-segmentation", "rx-checksum", "tx-checksum-ip-generic"} {
			if !slices.Contains(changed, f) {
				t.Errorf("changed lacks %s", f)
			}
		}
		out := run(t, "ethtool", "-k", tn.IfA)
		for _, line := range []string{"generic-receive-offload: off", "tcp-segmentation-offload: off",
			"generic-segmentation-offload: off", "rx-checksumming: off", "tx-checksum-ip-generic: off"} {
			if !strings.Contains(out, line) {
				t.Errorf("ethtool -k lacks %q", line)
			}
		}
		// Idempotent.
		if changed, err := DisableOffloads(tn.IfA); err != nil || len(changed) != 0 {
			t.Errorf("second DisableOffloads = %v, %v; want nothing changed", changed, err)
		}
		// Loopback's checksum offload is fixed on: a clear error naming it.
		_, err = DisableOffloads("lo")
		if err == nil || !strings.Contains(err.Error(), "tx-checksum-ip-generic") || !strings.Contains(err.Error(), "fixed") {
			t.Errorf("DisableOffloads(lo) = %v, want an error naming the fixed feature", err)
		}
		if _, err := DisableOffloads("nonexistent0"); err == nil {
			t.Error("DisableOffloads on a missing interface succeeded")
		}
	})
}

// TestCheckSuperFrameSize: an interface at the default limits passes; BIG
// TCP's larger super-frames, received or sent, are refused with the command
// that sets them back.
func TestCheckSuperFrameSize(t *testing.T) {
	inNetns(t, func(t *testing.T, tn testNet) {
		if err := CheckSuperFrameSize(tn.IfA); err != nil {
			t.Fatalf("default limits: %v", err)
		}
		link, err := netlink.LinkByName(tn.IfA)
		if err != nil {
			t.Fatal(err)
		}
		// By netlink: iproute2 before 6.3 knows neither setting.
		for _, lim := range []struct {
			attr string
			set  func(netlink.Link, int) error
		}{{"gro_ipv4_max_size", netlink.LinkSetGROIPv4MaxSize}, {"gso_ipv4_max_size", netlink.LinkSetGSOIPv4MaxSize}} {
			if err := lim.set(link, 131072); err != nil {
				t.Fatalf("set %s 131072: %v", lim.attr, err)
			}
			err := CheckSuperFrameSize(tn.IfA)
			if err == nil || !strings.Contains(err.Error(), lim.attr+" 131072") || !strings.Contains(err.Error(), "ip link set dev "+tn.IfA+" "+lim.attr+" 65536") {
				t.Errorf("%s 131072: %v, want an error naming it and the command to set it back", lim.attr, err)
			}
			if err := lim.set(link, 65536); err != nil {
				t.Fatalf("set %s back: %v", lim.attr, err)
			}
		}
		if err := CheckSuperFrameSize("nonexistent0"); err == nil {
			t.Error("a missing interface passed")
		}
	})
}

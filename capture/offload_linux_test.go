package capture

import (
	"slices"
	"strings"
	"testing"
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
